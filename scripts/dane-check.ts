// Checks sealpost's DANE client (src/worker/dane.ts) against a real DNSSEC-validating
// resolver, beyond the suite's fake one (which sets the AD flag where told): Unbound validating
// zones signed with ldns (test/helpers/unbound.ts).
//   - dane.test, signed, with a TLSA record for mx.dane.test: the client gets it with AD, and
//     it matches the certificate it was made from;
//   - bogus.test, signed, then its TLSA record changed after signing: Unbound answers
//     SERVFAIL, and the client defers;
//   - plain.test, not signed: no AD flag, so not DANE.
// test/integration/dane-unbound.test.ts runs it, and a whole delivery through Unbound.
//
//   apt-get install unbound ldnsutils && node scripts/dane-check.ts      (a few seconds)
import { createHash, X509Certificate } from "node:crypto";
import { spawnSync } from "node:child_process";
import { issueCertificate } from "../src/tls/certificates.ts";
import { createDaneResolver, matchTlsa } from "../src/worker/dane.ts";
import { startValidatingResolver, unboundMissing } from "../test/helpers/unbound.ts";

const missing = unboundMissing();
if (missing) {
  console.error(missing);
  process.exit(2);
}

const cert = issueCertificate({ names: ["mx.dane.test"] });
const spki = Buffer.from(new X509Certificate(cert.cert).publicKey.export({ type: "spki", format: "der" }));
const tlsaHex = createHash("sha256").update(spki).digest("hex");
const records = (name: string) => [`@ IN MX 10 mx.${name}.`, "mx IN A 127.0.0.1", `_25._tcp.mx IN TLSA 3 1 1 ${tlsaHex}`];

const resolver = await startValidatingResolver([
  { name: "dane.test", records: records("dane.test") },
  { name: "bogus.test", records: records("bogus.test"), tamper: { from: tlsaHex, to: "00".repeat(32) } },
  { name: "plain.test", records: records("plain.test"), signed: false },
]);
let failed = false;
try {
  const client = createDaneResolver({ host: resolver.host, port: resolver.port }, { timeoutMs: 3000 });
  const expect = (what: string, ok: boolean, detail: unknown) => {
    console.log(`${ok ? "pass" : "FAIL"}  ${what}: ${JSON.stringify(detail)}`);
    failed ||= !ok;
  };
  const d = await client.tlsa("mx.dane.test");
  expect("signed zone: TLSA validated (AD)", d.kind === "secure", d.kind === "secure" ? d.records.map((r) => `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString("hex")}`) : d);
  if (d.kind === "secure") {
    const m = matchTlsa(d.records, [new X509Certificate(cert.cert).raw], "mx.dane.test");
    expect("the certificate matches the validated record", "matched" in m, "matched" in m ? "3 1 1" : m);
  }
  const b = await client.tlsa("mx.bogus.test");
  expect("record changed after signing: bogus, deferred", b.kind === "defer", b);
  const p = await client.tlsa("mx.plain.test");
  expect("unsigned zone: not DANE", p.kind === "none", p);
} finally {
  await resolver.close();
}
console.log(failed ? "DANE check failed" : `DANE check passed (unbound ${spawnSync("unbound", ["-V"], { encoding: "utf8" }).stdout.split("\n")[0]})`);
process.exit(failed ? 1 : 0);
