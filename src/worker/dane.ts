// DANE for SMTP (RFC 7672, RFC 7671), when the operator runs a DNSSEC-validating resolver on
// loopback (DANE_RESOLVER, e.g. Unbound): the TLSA records of an MX host, asked with the DO
// bit through dns-packet, are trusted only when that resolver sets the AD flag (it validated
// them; RFC 6698 section 4.1); a resolver elsewhere could be impersonated on the way, so only
// loopback is accepted. Then:
//   - secure, usable records (DANE-TA(2), DANE-EE(3)): the delivery is `required` and the
//     certificate is checked against them instead of a CA and the name (RFC 7672 section 3);
//   - secure, but only unusable records (PKIX-TA/PKIX-EE, unknown selector or matching type):
//     TLS is mandatory but unauthenticated (RFC 7672 section 2.2);
//   - no records, or an answer without AD (unsigned zone): not DANE, the other layers decide;
//   - SERVFAIL (what a validating resolver answers for bogus data), a timeout or a broken
//     answer: the host is not tried now, the delivery is deferred (KumoMTA's rule): an
//     attacker must not turn DANE off by breaking the lookup.
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { createHash, randomInt, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import dnsPacket, { type DecodedPacket, type TlsaData } from "dns-packet";

export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

export type TlsaLookup =
  | { kind: "secure"; records: TlsaRecord[] }
  | { kind: "none"; reason: string }
  | { kind: "defer"; reason: string };

/** "3 1 1 <hex>", as zone files write a TLSA record. */
export const describeTlsa = (r: TlsaRecord) => `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString("hex")}`;

/** Usable for SMTP (RFC 7672 section 3.1): DANE-TA(2) or DANE-EE(3), a known selector and matching type. */
export const usable = (r: TlsaRecord) => (r.usage === 2 || r.usage === 3) && (r.selector === 0 || r.selector === 1) && r.matchingType <= 2;

const TIMEOUT_MS = 3000;

/** Asks one question with EDNS0 and DO (and AD: RFC 6840 section 5.7); over TCP when the UDP answer was truncated. */
async function ask(server: { host: string; port: number }, name: string, type: "TLSA", timeoutMs: number): Promise<DecodedPacket> {
  const id = randomInt(0, 65536);
  const query: dnsPacket.Packet = {
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
    questions: [{ type, name, class: "IN" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer],
  };
  const matches = (p: DecodedPacket) => p.id === id && p.type === "response" && p.questions?.[0]?.name.toLowerCase() === name.toLowerCase() && p.questions?.[0]?.type === type;
  const udp = await new Promise<DecodedPacket>((resolve, reject) => {
    const socket = createSocket(isIP(server.host) === 6 ? "udp6" : "udp4");
    const timer = setTimeout(() => done(new Error(`no answer from ${server.host}:${server.port} within ${timeoutMs} ms`)), timeoutMs);
    const done = (err: Error | null, p?: DecodedPacket) => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(p!);
    };
    socket.on("error", (err) => done(err));
    socket.on("message", (msg) => {
      let p: DecodedPacket;
      try {
        p = dnsPacket.decode(msg);
      } catch {
        return; // not an answer to us: keep waiting
      }
      if (matches(p)) done(null, p);
    });
    socket.send(dnsPacket.encode(query), server.port, server.host);
  });
  if (!udp.flag_tc) return udp;
  return new Promise<DecodedPacket>((resolve, reject) => {
    const socket = connect({ host: server.host, port: server.port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => done(new Error(`no TCP answer from ${server.host}:${server.port} within ${timeoutMs} ms`)), timeoutMs);
    const done = (err: Error | null, p?: DecodedPacket) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(p!);
    };
    socket.on("error", (err) => done(err));
    socket.on("connect", () => socket.write(dnsPacket.streamEncode(query)));
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      const all = Buffer.concat(chunks);
      if (all.length < 2 || all.length < 2 + all.readUInt16BE(0)) return;
      try {
        const p = dnsPacket.streamDecode(all) as DecodedPacket;
        if (matches(p)) done(null, p);
        else done(new Error("the TCP answer does not match the question"));
      } catch (err) {
        done(err as Error);
      }
    });
  });
}

export interface DaneResolver {
  /** The TLSA records of `_<port>._tcp.<host>`, and whether they may be used. */
  tlsa(host: string, port?: number): Promise<TlsaLookup>;
}

export function createDaneResolver(server: { host: string; port: number }, opts: { timeoutMs?: number } = {}): DaneResolver {
  const timeoutMs = opts.timeoutMs ?? TIMEOUT_MS;
  return {
    async tlsa(host, port = 25) {
      const name = `_${port}._tcp.${host.replace(/\.$/, "").toLowerCase()}`;
      let p: DecodedPacket;
      try {
        p = await ask(server, name, "TLSA", timeoutMs);
      } catch (err) {
        return { kind: "defer", reason: `TLSA lookup for ${name} failed: ${(err as Error).message}` };
      }
      const rcode = (p as unknown as { rcode?: string }).rcode ?? "NOERROR";
      if (rcode === "SERVFAIL") return { kind: "defer", reason: `TLSA lookup for ${name} failed (SERVFAIL: bogus DNSSEC data, or the zone is unreachable)` };
      if (rcode !== "NOERROR" && rcode !== "NXDOMAIN") return { kind: "defer", reason: `TLSA lookup for ${name} failed (${rcode})` };
      if (!p.flag_ad) return { kind: "none", reason: `${name} is not DNSSEC-signed (no AD flag from the validating resolver)` };
      // A CNAME chain is followed by the resolver; the records are the TLSA answers whatever their owner (RFC 7672 section 2.2.3).
      const records = (p.answers ?? []).flatMap((a) => (a.type === "TLSA" ? [a.data as TlsaData] : [])).map((d) => ({ usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: d.certificate }));
      if (records.length === 0) return { kind: "none", reason: `${name} has no TLSA records (DNSSEC-validated)` };
      return { kind: "secure", records };
    },
  };
}

function selected(cert: X509Certificate, selector: number): Buffer {
  return selector === 0 ? cert.raw : Buffer.from(cert.publicKey.export({ type: "spki", format: "der" }));
}

function digest(data: Buffer, matchingType: number): Buffer {
  if (matchingType === 1) return createHash("sha256").update(data).digest();
  if (matchingType === 2) return createHash("sha512").update(data).digest();
  return data;
}

const matchesRecord = (cert: X509Certificate, r: TlsaRecord) => digest(selected(cert, r.selector), r.matchingType).equals(r.data);

/**
 * Checks a server's chain (DER, leaf first, as presented) against secure TLSA records
 * (RFC 7672 section 3.1): DANE-EE(3) matches the leaf, with no name or expiry check;
 * DANE-TA(2) matches a certificate of the chain, which must then issue the leaf through
 * the certificates in between (signatures and validity checked) and the leaf must name
 * the MX host. Returns the record matched, or why none did.
 */
export function matchTlsa(records: TlsaRecord[], chain: Buffer[], host: string): { matched: TlsaRecord } | { error: string } {
  const certs = chain.map((der) => new X509Certificate(der));
  const leaf = certs[0];
  if (!leaf) return { error: "DANE_NO_CERTIFICATE" };
  const now = Date.now();
  for (const r of records.filter(usable)) {
    if (r.usage === 3 && matchesRecord(leaf, r)) return { matched: r };
    if (r.usage !== 2) continue;
    const at = certs.findIndex((c) => matchesRecord(c, r));
    if (at < 0) continue;
    let ok = true;
    for (let i = 0; i < at && ok; i++) ok = certs[i]!.checkIssued(certs[i + 1]!) && certs[i]!.verify(certs[i + 1]!.publicKey);
    for (let i = 0; i < at && ok; i++) ok = Date.parse(certs[i]!.validFrom) <= now && now <= Date.parse(certs[i]!.validTo);
    if (ok && leaf.checkHost(host.replace(/\.$/, ""), { subject: "never", wildcards: true, partialWildcards: false, multiLabelWildcards: false })) return { matched: r };
  }
  return { error: `DANE_NO_MATCH: no usable TLSA record of ${host} matches the certificate presented` };
}
