// A local STARTTLS SMTP sink for trying sealpost end to end: listens on
// localhost:2525 with a certificate for "localhost" issued by the development CA in
// certs/ (created if missing), and prints one line per message received with the
// TLS protocol and cipher the sender negotiated. Never for production.
import { SMTPServer } from "smtp-server";
import { readFileSync } from "node:fs";
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
      callback();
    });
  },
});
server.on("error", (err) => console.error("sink error:", err.message));
server.listen(port, "127.0.0.1", () => console.error(`STARTTLS sink on localhost:${port} (${selfSigned ? "self-signed certificate" : `certificate from ${dev.caFile}`})`));
const stop = () => server.close(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
