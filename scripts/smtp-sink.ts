// A local STARTTLS SMTP sink for trying sealpost end to end: listens on
// localhost:2525 with a certificate for "localhost" issued by the development CA in
// certs/ (created if missing), and prints one line per message received with the
// TLS protocol and cipher the sender negotiated. Never for production.
//
// Two opt-in extras for trying bounces (README, "Try the bounces"):
//   SINK_DNS=127.0.0.1:5354 SINK_ZONE=<file>  a DNS server on loopback answering from a zone
//       file (`sealpost domains show <domain> --zone` writes one), read again when it changes,
//       so `domains verify` with DNS_SERVERS pointing here finds the records it asks for;
//   SINK_BOUNCE_TO=localhost:2526  for each recipient whose local part matches SINK_BOUNCE_MATCH
//       (a regular expression, default ^bounce-me), the sink accepts the message and then, like
//       an MTA whose local delivery failed, sends an RFC 3464 DSN (sink-dsn.ts) from <> to the
//       message's envelope sender, over STARTTLS to that address (sealpost's bounce receiver,
//       INBOUND_LISTEN), trying again for a while when it is not taken.
import { SMTPServer } from "smtp-server";
import { readFileSync, statSync } from "node:fs";
import { createSocket } from "node:dgram";
import { isIPv4 } from "node:net";
import dnsPacket from "dns-packet";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import { ensureDevCertificates } from "../src/api/certificates.ts";
import { issueCertificate } from "../src/tls/certificates.ts";
import { sinkDsn } from "./sink-dsn.ts";

const port = Number(process.env.SINK_PORT ?? 2525);
const log = { info: (_o: object, m: string) => console.error(m), warn: (_o: object, m: string) => console.error(m) };
const dev = ensureDevCertificates(process.env.CERTS_DIR ?? "./certs", log);
// SINK_CERT=self-signed presents a certificate no CA vouches for, to watch the
// `required` policy refuse it (and `opportunistic` deliver while recording why).
const selfSigned = process.env.SINK_CERT === "self-signed";
const leaf = issueCertificate({
  names: ["localhost", "127.0.0.1"],
  ...(selfSigned ? {} : { ca: { cert: readFileSync(dev.caFile, "utf8"), key: readFileSync(dev.caFile.replace(/ca\.crt$/, "ca.key"), "utf8") } }),
});

const server = new SMTPServer({
  key: leaf.key,
  cert: leaf.cert,
  name: "localhost",
  authOptional: true,
  disabledCommands: ["AUTH"],
  disableReverseLookup: true,
  logger: false,
  onData(stream, session, callback) {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const socket = (session as unknown as { tlsOptions?: { name?: string; version?: string } }).tlsOptions;
      const data = Buffer.concat(chunks).toString("utf8");
      const id = /^Message-ID:\s*(.+)$/im.exec(data)?.[1] ?? "?";
      console.log(
        JSON.stringify({
          received: new Date().toISOString(),
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          secure: session.secure,
          tls: socket ?? null,
          message_id: id.trim(),
          bytes: data.length,
        }),
      );
      // Read before answering: smtp-server clears the envelope for the next transaction.
      // A message from <> (a bounce itself) is never bounced (RFC 5321 4.5.5).
      const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
      const failed = session.envelope.rcptTo.map((r) => r.address).filter((a) => bounceTo && from && bounceMatch.test(a.slice(0, a.lastIndexOf("@"))));
      const arrivedAt = new Date();
      callback();
      for (const rcpt of failed) void sendDsn(from, rcpt, data, arrivedAt);
    });
  },
});
server.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code !== "EADDRINUSE") return console.error("sink error:", err.message);
  console.error(`sink: port ${port} is in use (another sink?): set SINK_PORT`);
  process.exit(1);
});

// ---- DSNs back to the envelope sender -------------------------------------------------

const bounceTo = process.env.SINK_BOUNCE_TO ? hostPort(process.env.SINK_BOUNCE_TO, "SINK_BOUNCE_TO") : null;
const bounceMatch = localPartPattern(process.env.SINK_BOUNCE_MATCH ?? "^bounce-me");

function localPartPattern(v: string): RegExp {
  try {
    return new RegExp(v, "i");
  } catch (err) {
    console.error(`SINK_BOUNCE_MATCH must be a regular expression for the local part, such as ^bounce-me: ${(err as Error).message}`);
    process.exit(2);
  }
}

function hostPort(v: string, name: string): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(v);
  if (!m) {
    console.error(`${name} must be host:port, such as 127.0.0.1:2526`);
    process.exit(2);
  }
  return { host: m[1]!, port: Number(m[2]) };
}

/** Delays before each new try of a DSN the bounce receiver did not take (4xx or no connection), as an MTA's queue retries. */
const DSN_RETRY_MS = [1_000, 2_000, 4_000, 8_000, 16_000];

/**
 * Sends the DSN for `rcpt` from <> (RFC 5321 4.5.5) to `to` over STARTTLS, required and
 * verified against the development CA. A 4xx answer or a failed connection is tried again
 * on DSN_RETRY_MS (sealpost answers 451 to a DSN that comes before the worker has recorded
 * the delivery); a 5xx is final, as an MTA drops a bounce that bounces.
 */
async function sendDsn(to: string, rcpt: string, original: string, arrivedAt: Date, attempt = 0): Promise<void> {
  const conn = new SMTPConnection({
    host: bounceTo!.host, port: bounceTo!.port, name: "localhost", requireTLS: true,
    tls: { ca: [readFileSync(dev.caFile, "utf8")], servername: "localhost" },
    connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000, logger: false,
  });
  conn.on("error", () => {}); // reported through the callbacks below
  try {
    await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
    const dsn = sinkDsn({ to, recipient: rcpt, original, arrivedAt });
    await new Promise((resolve, reject) => conn.send({ from: "", to: [to] }, dsn, (err, info) => (err ? reject(err) : resolve(info))));
    console.log(JSON.stringify({ dsn_sent: new Date().toISOString(), to, about: rcpt, status: "5.1.1" }));
  } catch (err) {
    const code = (err as { responseCode?: number }).responseCode;
    const again = (code === undefined || (code >= 400 && code < 500)) && attempt < DSN_RETRY_MS.length;
    console.error(`sink: the DSN for ${rcpt} to ${to} was not taken: ${(err as Error).message}${again ? `; trying again in ${DSN_RETRY_MS[attempt]! / 1000} s` : ""}`);
    if (again) setTimeout(() => void sendDsn(to, rcpt, original, arrivedAt, attempt + 1), DSN_RETRY_MS[attempt]);
  } finally {
    conn.quit();
  }
}

// ---- DNS from a zone file -----------------------------------------------------------------

type ZoneRecord = { type: "TXT"; data: string[] } | { type: "MX"; data: { preference: number; exchange: string } } | { type: "A"; data: string };
let zone = new Map<string, ZoneRecord[]>();
let zoneStamp = "";

/**
 * The lines `domains show --zone` prints (name ttl IN type data, one record a line), plus
 * comments and blank lines; A records too, for names of your own. A line it cannot read is
 * reported, not guessed at (a record split over lines in parentheses is one).
 */
function parseZone(text: string, file: string): Map<string, ZoneRecord[]> {
  const out = new Map<string, ZoneRecord[]>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.replace(/^\s*;.*$/, "").trim();
    if (line === "" || line.startsWith("$")) continue;
    const m = /^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?(TXT|MX|A)\s+(.+)$/i.exec(line);
    const rec = m ? zoneRecord(m[2]!.toUpperCase(), m[3]!) : null;
    if (!m || !rec) {
      console.error(`sink DNS: ${file} line ${i + 1} not read (one record a line: name ttl IN TXT "..." | MX 10 host. | A 127.0.0.1)`);
      continue;
    }
    const name = m[1]!.toLowerCase().replace(/\.$/, "");
    out.set(name, [...(out.get(name) ?? []), rec]);
  }
  return out;
}

function zoneRecord(type: string, rest: string): ZoneRecord | null {
  if (type === "TXT") {
    // Quoted strings and nothing else (a comment may follow).
    if (!/^(?:"(?:[^"\\]|\\.)*"\s*)+(?:;.*)?$/.test(rest.trim())) return null;
    const strings = [...rest.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]!.replace(/\\(.)/g, "$1"));
    // One character-string holds at most 255 bytes (RFC 1035 3.3): a longer one is an error in the zone.
    return strings.length > 0 && strings.every((t) => Buffer.byteLength(t) <= 255) ? { type: "TXT", data: strings } : null;
  }
  if (type === "MX") {
    const m = /^(\d{1,5})\s+(\S+?)\.?(?:\s*;.*)?$/.exec(rest.trim());
    return m ? { type: "MX", data: { preference: Number(m[1]), exchange: m[2]! } } : null;
  }
  const ip = rest.replace(/;.*$/, "").trim();
  return isIPv4(ip) ? { type: "A", data: ip } : null;
}

function currentZone(file: string): Map<string, ZoneRecord[]> {
  try {
    const st = statSync(file);
    const stamp = `${st.mtimeMs}:${st.size}`;
    if (stamp !== zoneStamp) {
      zone = parseZone(readFileSync(file, "utf8"), file);
      zoneStamp = stamp;
      console.error(`sink DNS: ${zone.size} names from ${file}`);
    }
  } catch {
    // Not written yet: no names.
  }
  return zone;
}

const dnsAt = process.env.SINK_DNS ? hostPort(process.env.SINK_DNS, "SINK_DNS") : null;
const dnsSocket = dnsAt ? createSocket("udp4") : null;
if (dnsAt && dnsSocket) {
  const file = process.env.SINK_ZONE;
  if (!file) {
    console.error("SINK_DNS needs SINK_ZONE, the zone file to answer from (sealpost domains show <domain> --zone > file)");
    process.exit(2);
  }
  dnsSocket.on("message", (msg, peer) => {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (!question) return;
    const records = currentZone(file).get(question.name.toLowerCase().replace(/\.$/, ""));
    const answers = (records ?? []).filter((r) => r.type === question.type).map((r) => ({ name: question.name, type: r.type, class: "IN", ttl: 0, data: r.data }) as dnsPacket.Answer);
    const rcode = records ? 0 : 3; // NXDOMAIN for names the zone does not hold
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED);
    let reply: Buffer;
    try {
      reply = dnsPacket.encode({ type: "response", id: q.id, flags: flags | rcode, questions: [question], answers });
    } catch (err) {
      console.error(`sink DNS: could not answer ${question.name} ${question.type}: ${(err as Error).message}`);
      reply = dnsPacket.encode({ type: "response", id: q.id, flags: flags | 2, questions: [question] }); // SERVFAIL
    }
    dnsSocket.send(reply, peer.port, peer.address);
  });
  dnsSocket.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EADDRINUSE" && err.code !== "EADDRNOTAVAIL") return console.error("sink DNS error:", err.message);
    console.error(`sink: cannot answer DNS on ${dnsAt.host}:${dnsAt.port} (${err.code}): set SINK_DNS`);
    process.exit(1);
  });
  dnsSocket.bind(dnsAt.port, dnsAt.host, () => console.error(`sink DNS on ${dnsAt.host}:${dnsAt.port}, answering from ${file}`));
}
server.listen(port, "127.0.0.1", () => console.error(`STARTTLS sink on localhost:${port} (${selfSigned ? "self-signed certificate" : `certificate from ${dev.caFile}`})`));
const stop = () => {
  dnsSocket?.close();
  server.close(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
