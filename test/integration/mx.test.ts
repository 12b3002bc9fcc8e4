// MX resolution against a real resolver (c-ares) talking to a fake authoritative
// DNS server on loopback: RFC 5321 section 5.1 ordering and implicit MX, RFC 7505
// null MX, and which DNS failures bounce and which defer.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { createMxResolver, type MxResolution, type MxResolverOptions } from "../../src/worker/mx.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";

const many = Array.from({ length: 12 }, (_, i) => `mx${i}.many.test`);

const zone: FakeZone = {
  "ordered.test": {
    MX: [
      { preference: 30, exchange: "c.ordered.test" },
      { preference: 10, exchange: "a.ordered.test" },
      { preference: 20, exchange: "b.ordered.test" },
    ],
  },
  "a.ordered.test": { A: ["127.0.0.10", "127.0.0.11"], AAAA: ["::1"] },
  "b.ordered.test": { A: ["127.0.0.20"] },
  "c.ordered.test": { AAAA: ["::1"] },
  "equal.test": {
    MX: [
      { preference: 10, exchange: "x.equal.test" },
      { preference: 10, exchange: "y.equal.test" },
      { preference: 5, exchange: "first.equal.test" },
    ],
  },
  "x.equal.test": { A: ["127.0.0.30"] },
  "y.equal.test": { A: ["127.0.0.31"] },
  "first.equal.test": { A: ["127.0.0.32"] },
  "implicit.test": { A: ["127.0.0.40"], AAAA: ["::1"] },
  "nothing.test": {},
  "null.test": { MX: [{ preference: 0, exchange: "" }] },
  "mixed-null.test": {
    MX: [
      { preference: 0, exchange: "" },
      { preference: 10, exchange: "b.ordered.test" },
    ],
  },
  "servfail.test": { rcode: "SERVFAIL" },
  "refused.test": { rcode: "REFUSED" },
  "slow.test": { drop: true },
  "partial.test": {
    MX: [
      { preference: 10, exchange: "gone.partial.test" }, // NXDOMAIN
      { preference: 20, exchange: "noaddr.partial.test" }, // exists, no A/AAAA
      { preference: 30, exchange: "b.ordered.test" },
    ],
  },
  "noaddr.partial.test": {},
  "dead.test": {
    MX: [
      { preference: 10, exchange: "gone.dead.test" },
      { preference: 20, exchange: "noaddr.partial.test" },
    ],
  },
  "flaky.test": { MX: [{ preference: 10, exchange: "broken.flaky.test" }] },
  "broken.flaky.test": { rcode: "SERVFAIL" },
  "literal.test": {
    MX: [
      { preference: 5, exchange: "192.0.2.1" },
      { preference: 10, exchange: "b.ordered.test" },
    ],
  },
  "only-literal.test": { MX: [{ preference: 10, exchange: "192.0.2.1" }] },
  "case.test": { MX: [{ preference: 10, exchange: "MX.Case.TEST." }] },
  "mx.case.test": { A: ["127.0.0.50"] },
  "many.test": { MX: many.map((exchange, i) => ({ preference: i, exchange })) },
  ...Object.fromEntries(many.map((name, i) => [name, { A: [`127.0.1.${i}`] }])),
};

let dns: FakeDns;
before(async () => {
  dns = await startFakeDns(zone);
});
after(() => dns.close());

const resolver = (opts: MxResolverOptions = {}) =>
  createMxResolver({ servers: [dns.address], timeoutMs: 1000, tries: 1, ...opts });

function hostsOf(r: MxResolution) {
  assert.equal(r.kind, "hosts", JSON.stringify(r));
  return r.kind === "hosts" ? r.hosts : [];
}

test("MX hosts are ordered by ascending preference, whatever the answer order; addresses A then AAAA", async () => {
  const r = await resolver().resolve("ordered.test");
  assert.deepEqual(r, {
    kind: "hosts",
    implicit: false,
    hosts: [
      { host: "a.ordered.test", preference: 10, addresses: ["127.0.0.10", "127.0.0.11", "::1"] },
      { host: "b.ordered.test", preference: 20, addresses: ["127.0.0.20"] },
      { host: "c.ordered.test", preference: 30, addresses: ["::1"] },
    ],
  });
});

test("hosts of equal preference come in random order, after lower preferences", async () => {
  // A fixed-seed LCG: deterministic, yet drives both outcomes of the shuffle.
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const mx = resolver({ random });
  const orders = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const hosts = hostsOf(await mx.resolve("equal.test")).map((h) => h.host);
    assert.equal(hosts[0], "first.equal.test");
    orders.add(hosts.slice(1).join(","));
  }
  assert.deepEqual([...orders].sort(), ["x.equal.test,y.equal.test", "y.equal.test,x.equal.test"]);
});

test("no MX record: the domain itself is the implicit MX, with its A and AAAA addresses", async () => {
  const r = await resolver().resolve("implicit.test");
  assert.deepEqual(r, {
    kind: "hosts",
    implicit: true,
    hosts: [{ host: "implicit.test", preference: 0, addresses: ["127.0.0.40", "::1"] }],
  });
});

test("no MX record and no address bounces with 5.1.2", async () => {
  const r = await resolver().resolve("nothing.test");
  assert.equal(r.kind, "bounce");
  assert.equal(r.kind === "bounce" && r.enhancedCode, "5.1.2");
  assert.match(r.kind === "bounce" ? r.reason : "", /nothing\.test has no MX record and no A\/AAAA address/);
});

test("a domain that does not exist (NXDOMAIN) bounces with 5.1.2", async () => {
  const r = await resolver().resolve("missing.test");
  assert.deepEqual(r, { kind: "bounce", enhancedCode: "5.1.2", reason: "missing.test: domain does not exist (NXDOMAIN)" });
});

test("a null MX (RFC 7505) bounces with 5.1.10; mixed with real MX records it is ignored", async () => {
  const r = await resolver().resolve("null.test");
  assert.equal(r.kind, "bounce");
  assert.equal(r.kind === "bounce" && r.enhancedCode, "5.1.10");
  assert.match(r.kind === "bounce" ? r.reason : "", /null\.test publishes a null MX \(RFC 7505\)/);

  const mixed = hostsOf(await resolver().resolve("mixed-null.test"));
  assert.deepEqual(mixed.map((h) => h.host), ["b.ordered.test"]);
});

test("SERVFAIL, REFUSED, an unreachable server and a timeout defer with 4.4.3", async () => {
  const cases: [string, Promise<MxResolution>, RegExp][] = [
    ["servfail", resolver().resolve("servfail.test"), /MX lookup for servfail\.test failed: .*SERVFAIL/],
    ["refused", resolver().resolve("refused.test"), /MX lookup for refused\.test failed: .*REFUSED/],
    ["timeout", resolver({ timeoutMs: 100, tries: 1 }).resolve("slow.test"), /MX lookup for slow\.test failed: .*timed out/],
  ];
  // A UDP port that was just closed: the kernel answers with ICMP port unreachable.
  const probe = createSocket("udp4");
  await new Promise<void>((ok) => probe.bind(0, "127.0.0.1", ok));
  const closedPort = probe.address().port;
  await new Promise<void>((ok) => probe.close(ok));
  const unreachable = createMxResolver({ servers: [`127.0.0.1:${closedPort}`], timeoutMs: 500, tries: 1 });
  cases.push(["unreachable", unreachable.resolve("any.test"), /MX lookup for any\.test failed: .*connection refused/]);

  for (const [name, pending, reason] of cases) {
    const r = await pending;
    assert.equal(r.kind, "defer", `${name}: ${JSON.stringify(r)}`);
    assert.equal(r.kind === "defer" && r.enhancedCode, "4.4.3", name);
    assert.match(r.kind === "defer" ? r.reason : "", reason, name);
  }
});

test("MX hosts without an address are skipped; when none has one, delivery defers", async () => {
  const partial = hostsOf(await resolver().resolve("partial.test"));
  assert.deepEqual(partial, [{ host: "b.ordered.test", preference: 30, addresses: ["127.0.0.20"] }]);

  const dead = await resolver().resolve("dead.test");
  assert.equal(dead.kind, "defer");
  assert.equal(dead.kind === "defer" && dead.enhancedCode, "4.4.4");
  assert.match(dead.kind === "defer" ? dead.reason : "", /no MX host of dead\.test has a usable address/);
  assert.match(dead.kind === "defer" ? dead.reason : "", /gone\.dead\.test has no address \(A: domain does not exist \(NXDOMAIN\)/);
  assert.match(dead.kind === "defer" ? dead.reason : "", /noaddr\.partial\.test has no address \(A: no records \(NODATA\)/);

  // The address lookup failing (not answering "none") is a DNS failure: 4.4.3.
  const flaky = await resolver().resolve("flaky.test");
  assert.equal(flaky.kind === "defer" && flaky.enhancedCode, "4.4.3", JSON.stringify(flaky));
  assert.match(flaky.kind === "defer" ? flaky.reason : "", /broken\.flaky\.test has no address \(A: DNS server failure \(SERVFAIL\)/);
});

test("an MX naming an IP address is skipped (RFC 5321 section 5.1)", async () => {
  const hosts = hostsOf(await resolver().resolve("literal.test"));
  assert.deepEqual(hosts.map((h) => h.host), ["b.ordered.test"]);

  const only = await resolver().resolve("only-literal.test");
  assert.equal(only.kind, "defer");
  assert.match(only.kind === "defer" ? only.reason : "", /192\.0\.2\.1 skipped: an MX must name a host, not an IP address/);
});

test("names are lowercased and lose their trailing dot", async () => {
  const r = await resolver().resolve("Case.TEST.");
  assert.deepEqual(r, {
    kind: "hosts",
    implicit: false,
    hosts: [{ host: "mx.case.test", preference: 10, addresses: ["127.0.0.50"] }],
  });
  const implicit = hostsOf(await resolver().resolve("IMPLICIT.test."));
  assert.equal(implicit[0]?.host, "implicit.test");
});

test("at most 10 MX hosts are looked up and returned", async () => {
  const hosts = hostsOf(await resolver().resolve("many.test"));
  assert.deepEqual(hosts.map((h) => h.host), many.slice(0, 10));
  const asked = new Set(dns.queries.filter((q) => q.type === "A").map((q) => q.name.toLowerCase()));
  for (const name of many.slice(10)) assert.ok(!asked.has(name), `${name} should not have been looked up`);
});

test("cachingResolver shares lookups, keeps answers for the TTL, and never keeps a temporary failure", async () => {
  const { cachingResolver } = await import("../../src/worker/mx.ts");
  let clock = 0;
  const calls: string[] = [];
  const answers: Record<string, MxResolution> = {
    "ok.test": { kind: "hosts", implicit: false, hosts: [{ host: "mx.ok.test", preference: 10, addresses: ["127.0.0.2"] }] },
    "down.test": { kind: "defer", enhancedCode: "4.4.3", reason: "SERVFAIL" },
  };
  const resolve = cachingResolver(async (d) => (calls.push(d), answers[d]!), 1000, () => clock);
  const [a, b] = await Promise.all([resolve("ok.test"), resolve("OK.test")]);
  assert.equal(a, b);
  assert.deepEqual(calls, ["ok.test"], "concurrent lookups of one domain share one query");
  clock = 999;
  await resolve("ok.test");
  assert.equal(calls.length, 1, "within the TTL the answer is reused");
  clock = 1000;
  await resolve("ok.test");
  assert.equal(calls.length, 2, "after the TTL it is asked again");
  await resolve("down.test");
  await resolve("down.test");
  assert.deepEqual(calls.slice(2), ["down.test", "down.test"], "a deferral is not cached");
});
