// Checks sealpost's DANE client (src/worker/dane.ts) against a real DNSSEC-validating
// resolver, which `npm test` cannot (its resolver is a fake that sets the AD flag where told):
// Unbound (Debian's `unbound`) validating zones signed here with ldns (Debian's `ldnsutils`),
// served to it as local authoritative data (auth-zone) under their own trust anchors.
//   - dane.test, signed, with a TLSA record for mx.dane.test: the client gets it with AD, and
//     it matches the certificate it was made from;
//   - bogus.test, signed, then its TLSA record changed after signing: Unbound answers
//     SERVFAIL, and the client defers;
//   - plain.test, not signed: no AD flag, so not DANE.
//
//   apt-get install unbound ldnsutils && node scripts/dane-check.ts      (a few seconds)
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createSocket } from "node:dgram";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash, X509Certificate } from "node:crypto";
import { issueCertificate } from "../src/tls/certificates.ts";
import { createDaneResolver, matchTlsa } from "../src/worker/dane.ts";

for (const tool of ["unbound", "ldns-keygen", "ldns-signzone"]) {
  if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) {
    console.error(`${tool} is not installed: apt-get install unbound ldnsutils`);
    process.exit(2);
  }
}

const dir = mkdtempSync(join(tmpdir(), "dane-check-"));
const port = 20000 + Math.floor(Math.random() * 20000);
const cert = issueCertificate({ names: ["mx.dane.test"] });
const spki = Buffer.from(new X509Certificate(cert.cert).publicKey.export({ type: "spki", format: "der" }));
const tlsaHex = createHash("sha256").update(spki).digest("hex");

function zone(name: string): string {
  return [
    `$ORIGIN ${name}.`,
    "$TTL 300",
    `@ IN SOA ns.${name}. hostmaster.${name}. 1 3600 600 86400 300`,
    `@ IN NS ns.${name}.`,
    "ns IN A 127.0.0.1",
    `@ IN MX 10 mx.${name}.`,
    "mx IN A 127.0.0.1",
    `_25._tcp.mx IN TLSA 3 1 1 ${tlsaHex}`,
    "",
  ].join("\n");
}

/** Signs a zone with a new Ed25519 key; returns the signed file and the key's DNSKEY (the trust anchor). */
function sign(name: string): { signed: string; anchor: string } {
  const file = join(dir, `${name}.zone`);
  writeFileSync(file, zone(name));
  const key = spawnSync("ldns-keygen", ["-a", "ED25519", "-k", name], { cwd: dir, encoding: "utf8" });
  if (key.status !== 0) throw new Error(`ldns-keygen: ${key.stderr}`);
  const base = key.stdout.trim();
  const s = spawnSync("ldns-signzone", ["-n", file, base], { cwd: dir, encoding: "utf8" });
  if (s.status !== 0) throw new Error(`ldns-signzone: ${s.stderr}`);
  return { signed: `${file}.signed`, anchor: join(dir, `${base}.key`) };
}

const dane = sign("dane.test");
const bogus = sign("bogus.test");
// Change the signed TLSA data: its RRSIG no longer holds.
writeFileSync(bogus.signed, readFileSync(bogus.signed, "utf8").replace(tlsaHex, "00".repeat(32)));
writeFileSync(join(dir, "plain.test.zone"), zone("plain.test"));

const conf = join(dir, "unbound.conf");
writeFileSync(conf, `server:
  interface: 127.0.0.1@${port}
  port: ${port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "${dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  module-config: "validator iterator"
  # .test is one of Unbound's built-in blocked zones (RFC 6761); these checks live there.
  local-zone: "test." nodefault
  trust-anchor-file: "${dane.anchor}"
  trust-anchor-file: "${bogus.anchor}"
  val-log-level: 1
auth-zone:
  name: "dane.test"
  zonefile: "${dane.signed}"
  for-upstream: yes
  for-downstream: no
auth-zone:
  name: "bogus.test"
  zonefile: "${bogus.signed}"
  for-upstream: yes
  for-downstream: no
auth-zone:
  name: "plain.test"
  zonefile: "${join(dir, "plain.test.zone")}"
  for-upstream: yes
  for-downstream: no
`);
const check = spawnSync("unbound-checkconf", [conf], { encoding: "utf8" });
if (check.status !== 0) throw new Error(`unbound-checkconf: ${check.stdout}${check.stderr}`);

const unbound = spawn("unbound", ["-d", "-c", conf], { stdio: ["ignore", "inherit", "inherit"] });
let failed = false;
try {
  // Wait until it answers (no sleep: a query with a deadline, again until then).
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = createSocket("udp4");
      const t = setTimeout(() => (s.close(), resolve(false)), 300);
      s.on("message", () => (clearTimeout(t), s.close(), resolve(true)));
      s.send(Buffer.from("000001000001000000000000000001000100", "hex"), port, "127.0.0.1"); // ". IN A"
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error("unbound did not answer within 10 s");
  }
  const client = createDaneResolver({ host: "127.0.0.1", port }, { timeoutMs: 3000 });
  const results = {
    "mx.dane.test": await client.tlsa("mx.dane.test"),
    "mx.bogus.test": await client.tlsa("mx.bogus.test"),
    "mx.plain.test": await client.tlsa("mx.plain.test"),
  };
  const expect = (what: string, ok: boolean, detail: unknown) => {
    console.log(`${ok ? "pass" : "FAIL"}  ${what}: ${JSON.stringify(detail)}`);
    failed ||= !ok;
  };
  const d = results["mx.dane.test"];
  expect("signed zone: TLSA validated (AD)", d.kind === "secure", d.kind === "secure" ? d.records.map((r) => `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString("hex")}`) : d);
  if (d.kind === "secure") {
    const m = matchTlsa(d.records, [new X509Certificate(cert.cert).raw], "mx.dane.test");
    expect("the certificate matches the validated record", "matched" in m, "matched" in m ? "3 1 1" : m);
  }
  const b = results["mx.bogus.test"];
  expect("record changed after signing: bogus, deferred", b.kind === "defer", b);
  const p = results["mx.plain.test"];
  expect("unsigned zone: not DANE", p.kind === "none", p);
} finally {
  unbound.kill("SIGTERM");
}
console.log(failed ? "DANE check failed" : `DANE check passed (unbound ${spawnSync("unbound", ["-V"], { encoding: "utf8" }).stdout.split("\n")[0]}; files in ${dir})`);
process.exit(failed ? 1 : 0);
