// DANE against a real DNSSEC-validating resolver (issue 15, item 2): scripts/dane-check.ts
// signs zones with ldns, has Unbound validate them, and reads them with the DANE client.
// The other DANE tests use a fake resolver that sets the AD flag where told; this one shows
// the client reads a real validator's answers right: AD on validated data, SERVFAIL for a
// record changed after signing, no AD for an unsigned zone. Needs Debian's unbound and
// ldnsutils (CI installs them).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnCli } from "../helpers/cli-process.ts";

test("Unbound validates a signed TLSA record, refuses a bogus one, and an unsigned zone is not DANE", async () => {
  const p = spawnCli(process.execPath, ["scripts/dane-check.ts"], {});
  const { code } = await p.exited;
  const out = p.output();
  assert.equal(code, 0, out);
  for (const line of [
    /^pass {2}signed zone: TLSA validated \(AD\): \["3 1 1 [0-9a-f]{64}"\]$/m,
    /^pass {2}the certificate matches the validated record: "3 1 1"$/m,
    /^pass {2}record changed after signing: bogus, deferred: .*SERVFAIL/m,
    /^pass {2}unsigned zone: not DANE: .*no AD flag/m,
  ]) assert.match(out, line);
});
