// A local STARTTLS SMTP sink for trying sealpost end to end: listens on
// localhost:2525 with a certificate for "localhost" issued by the development CA in
// certs/ (created if missing), and prints one line per message received with the
// TLS protocol and cipher the sender negotiated. Never for production.
//
// Two opt-in extras for trying bounces (README, "Try the bounces"):
//   SINK_DNS=127.0.0.1:5354 SINK_ZONE=<file>  a DNS server on loopback answering from a zone
//       file (`sealpost domains show <domain> --zone` writes one), read again when it changes,
//       so `domains verify` with DNS_SERVERS pointing here finds the records it asks for;
//   SINK_BOUNCE_TO=localhost:2526  for each recipient whose address matches SINK_BOUNCE_MATCH
//       (default ^bounce-me@), the sink accepts the message and then, like an MTA whose local
//       delivery failed, sends an RFC 3464 DSN from <> to the message's envelope sender, over
//       STARTTLS to that address (sealpost's bounce receiver, INBOUND_LISTEN).
import { SMTPServer } from "smtp-server";
import { readFileSync, statSync } from "node:fs";
import { createSocket } from "node:dgram";
import { randomUUID } from "node:crypto";
import dnsPacket from "dns-packet";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import { ensureDevCertificates } from "../src/api/certificates.ts";
import { issueCertificate } from "../src/tls/certificates.ts";

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
      const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
      const failed = session.envelope.rcptTo.map((r) => r.address).filter((a) => bounceTo && from && bounceMatch.test(a));
      callback();
      for (const rcpt of failed) void sendDsn(from, rcpt, data);
    });
  },
});
server.on("error", (err) => console.error("sink error:", err.message));

// ---- DSNs back to the envelope sender -------------------------------------------------

const bounceTo = process.env.SINK_BOUNCE_TO ? hostPort(process.env.SINK_BOUNCE_TO, "SINK_BOUNCE_TO") : null;
const bounceMatch = new RegExp(process.env.SINK_BOUNCE_MATCH ?? "^bounce-me@", "i");

function hostPort(v: string, name: string): { host: string; port: number } {
  const m = /^([^:]+):(\d{1,5})$/.exec(v);
  if (!m) {
    console.error(`${name} must be host:port, such as 127.0.0.1:2526`);
    process.exit(2);
  }
  return { host: m[1]!, port: Number(m[2]) };
}

/** The DSN an MTA writes when delivery to `rcpt` failed after it took the message (RFC 3464, as Postfix words it). */
function dsn(to: string, rcpt: string, original: string): string {
  const headers = original.split(/\r?\n\r?\n/, 1)[0] ?? "";
  const boundary = `sink-${randomUUID()}`;
  return [
    "From: Mail Delivery System <MAILER-DAEMON@localhost>",
    `To: <${to}>`,
    "Subject: Undelivered Mail Returned to Sender",
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${randomUUID()}@localhost>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    "",
    `--${boundary}`,
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "This is the mail system at host localhost (the sealpost sink).",
    "",
    `Your message could not be delivered to <${rcpt}>: the mailbox does not exist.`,
    "",
    `--${boundary}`,
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; localhost",
    `Arrival-Date: ${new Date().toUTCString()}`,
    "",
    `Final-Recipient: rfc822; ${rcpt}`,
    `Original-Recipient: rfc822;${rcpt}`,
    "Action: failed",
    "Status: 5.1.1",
    `Diagnostic-Code: smtp; 550 5.1.1 <${rcpt}>: Recipient address rejected: User unknown in local recipient table`,
    "",
    `--${boundary}`,
    "Content-Type: text/rfc822-headers",
    "",
    headers,
    "",
    `--${boundary}--`,
    "",
  ].join("\r\n");
}

async function sendDsn(to: string, rcpt: string, original: string): Promise<void> {
  const conn = new SMTPConnection({
    host: bounceTo!.host, port: bounceTo!.port, name: "localhost", tls: { ca: [readFileSync(dev.caFile, "utf8")], servername: "localhost" },
    connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000, logger: false,
  });
  conn.on("error", () => {}); // reported through the callbacks below
  try {
    await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
    await new Promise((resolve, reject) => conn.send({ from: "", to: [to] }, dsn(to, rcpt, original), (err, info) => (err ? reject(err) : resolve(info))));
    console.log(JSON.stringify({ dsn_sent: new Date().toISOString(), to, about: rcpt, status: "5.1.1" }));
  } catch (err) {
    console.error(`sink: the DSN for ${rcpt} to ${to} was not taken: ${(err as Error).message}`);
  } finally {
    conn.quit();
  }
}

// ---- DNS from a zone file -----------------------------------------------------------------

type ZoneRecord = { type: "TXT"; data: string[] } | { type: "MX"; data: { preference: number; exchange: string } } | { type: "A"; data: string };
let zone = new Map<string, ZoneRecord[]>();
let zoneStamp = 0;

/** The lines `domains show --zone` prints (name ttl IN type data), plus comments and blank lines. */
function parseZone(text: string): Map<string, ZoneRecord[]> {
  const out = new Map<string, ZoneRecord[]>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/^\s*;.*$/, "").trim();
    const m = /^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?(TXT|MX|A)\s+(.+)$/i.exec(line);
    if (!m) continue;
    const name = m[1]!.toLowerCase().replace(/\.$/, "");
    const type = m[2]!.toUpperCase();
    const rest = m[3]!;
    let rec: ZoneRecord;
    if (type === "TXT") rec = { type: "TXT", data: [...rest.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]!.replace(/\\(.)/g, "$1")) };
    else if (type === "MX") {
      const [pref = "10", host = "."] = rest.split(/\s+/);
      rec = { type: "MX", data: { preference: Number(pref), exchange: host.replace(/\.$/, "") || "." } };
    } else rec = { type: "A", data: rest.trim() };
    out.set(name, [...(out.get(name) ?? []), rec]);
  }
  return out;
}

function currentZone(file: string): Map<string, ZoneRecord[]> {
  try {
    const stamp = statSync(file).mtimeMs;
    if (stamp !== zoneStamp) {
      zone = parseZone(readFileSync(file, "utf8"));
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
    dnsSocket.send(dnsPacket.encode({ type: "response", id: q.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | rcode, questions: [question], answers }), peer.port, peer.address);
  });
  dnsSocket.on("error", (err) => console.error("sink DNS error:", err.message));
  dnsSocket.bind(dnsAt.port, dnsAt.host, () => console.error(`sink DNS on ${dnsAt.host}:${dnsAt.port}, answering from ${file}`));
}
server.listen(port, "127.0.0.1", () => console.error(`STARTTLS sink on localhost:${port} (${selfSigned ? "self-signed certificate" : `certificate from ${dev.caFile}`})`));
const stop = () => {
  dnsSocket?.close();
  server.close(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
