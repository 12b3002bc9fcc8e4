// Destination limits (worker/destinations.ts) with a fake clock: which rule applies, what
// counts as throttling, how a throttling host's sessions and pauses move.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { loadConfig } from "../../src/config.ts";
import { DestinationGate, isThrottling } from "../../src/worker/destinations.ts";

const silent = pino({ level: "silent" });
const reply = (replyCode: number | null, enhancedCode: string | null, outcome: "deferred" | "delivered" | "bounced" = "deferred") => ({ outcome, replyCode, enhancedCode });

function gate(rules = "", pauseMs = 60_000) {
  const clock = { now: 1_000_000 };
  const c = loadConfig({ SMTP_DESTINATION_LIMITS: rules });
  const g = new DestinationGate(
    { sessions: c.SMTP_DESTINATION_SESSIONS, messagesPerSession: c.SMTP_DESTINATION_MESSAGES_PER_SESSION, throttlePauseMs: pauseMs, rules: c.SMTP_DESTINATION_LIMITS },
    silent,
    () => clock.now,
  );
  return { g, clock };
}

test("throttling is 421 or a 4.7.x reply from the peer; not a 4.x.x about something else, a 5xx, or our own verdict", () => {
  assert.ok(isThrottling(reply(421, "4.7.0")));
  assert.ok(isThrottling(reply(421, null)));
  assert.ok(isThrottling(reply(421, "4.3.2")));
  assert.ok(isThrottling(reply(450, "4.7.1"))); // greylisting
  assert.ok(isThrottling(reply(451, "4.7.500"))); // Microsoft: server busy
  assert.ok(!isThrottling(reply(451, "4.3.0")));
  assert.ok(!isThrottling(reply(452, "4.2.2"))); // mailbox full: about a recipient
  assert.ok(!isThrottling(reply(550, "5.7.1", "bounced")));
  assert.ok(!isThrottling(reply(null, "4.7.0"))); // our own "not tried" verdict
});

test("the longest rule naming the recipient domain or the MX host applies; the defaults otherwise", () => {
  const { g } = gate("gmail.com:sessions=4:messages=100,.google.com:sessions=3,.l.google.com:messages=50");
  assert.deepEqual(g.limits("gmail.com", "gmail-smtp-in.l.google.com"), { sessions: 10, messagesPerSession: 50 });
  assert.deepEqual(g.limits("gmail.com", "mx.elsewhere.example"), { sessions: 4, messagesPerSession: 100 });
  assert.deepEqual(g.limits("example.org", "aspmx.google.com"), { sessions: 3, messagesPerSession: 1000 });
  assert.deepEqual(g.limits("GMAIL.COM", "MX.ELSEWHERE.EXAMPLE"), { sessions: 4, messagesPerSession: 100 });
  // ".google.com" is what is under it, not google.com itself nor notgoogle.com.
  assert.deepEqual(g.limits("google.com", "google.com"), { sessions: 10, messagesPerSession: 1000 });
  assert.deepEqual(g.limits("x.example", "mx.notgoogle.com"), { sessions: 10, messagesPerSession: 1000 });
});

test("a bad rule names the variable, the rule and the expected form", () => {
  assert.throws(() => loadConfig({ SMTP_DESTINATION_LIMITS: "gmail.com:sessions=0" }), /SMTP_DESTINATION_LIMITS: "gmail.com:sessions=0": "sessions=0" is not sessions=N/);
  assert.throws(() => loadConfig({ SMTP_DESTINATION_LIMITS: "gmail.com" }), /"gmail.com": sets nothing; expected rules separated by commas/);
  assert.throws(() => loadConfig({ SMTP_DESTINATION_LIMITS: "*.gmail.com:sessions=2" }), /does not start with a domain or host name/);
  assert.throws(() => loadConfig({ SMTP_DESTINATION_LIMITS: "gmail.com:conns=2" }), /"conns=2" is not sessions=N or messages=N/);
});

test("sessions over the limit wait their turn, oldest first", async () => {
  const { g } = gate();
  const a = await g.acquire("mx.example", 2);
  const b = await g.acquire("mx.example", 2);
  const started: string[] = [];
  const c = g.acquire("mx.example", 2).then((r) => (started.push("c"), r));
  const d = g.acquire("mx.example", 2).then((r) => (started.push("d"), r));
  await Promise.resolve();
  assert.deepEqual(started, []);
  a();
  a(); // a second release of the same session counts once
  await c;
  assert.deepEqual(started, ["c"]);
  b();
  (await d)();
  (await c)();
  assert.deepEqual(started, ["c", "d"]);
});

test("a throttle pauses the host and halves its sessions; deliveries bring them back one by one; pauses double while it keeps at it", async () => {
  const { g, clock } = gate("", 1000);
  const held = await Promise.all([1, 2, 3, 4].map(() => g.acquire("mx.busy", 8)));
  g.observe("mx.busy", 8, [reply(421, "4.7.0")]);
  assert.equal(g.pausedUntil("mx.busy"), clock.now + 1000);
  // A second 421 from a session that was already under way is the same signal.
  g.observe("mx.busy", 8, [reply(421, "4.7.0")]);
  assert.equal(g.pausedUntil("mx.busy"), clock.now + 1000);
  held.forEach((release) => release());

  clock.now += 1001;
  assert.equal(g.pausedUntil("mx.busy"), null);
  // Four were open: now two at once.
  const [x, y] = [await g.acquire("mx.busy", 8), await g.acquire("mx.busy", 8)];
  let third = false;
  const z = g.acquire("mx.busy", 8).then((r) => ((third = true), r));
  await Promise.resolve();
  assert.equal(third, false, "a third session waits while the host is at its lowered cap");
  // Throttled again right after the pause: twice as long.
  g.observe("mx.busy", 8, [reply(421, null)]);
  assert.equal(g.pausedUntil("mx.busy"), clock.now + 2000);
  x();
  y();
  (await z)();

  clock.now += 2001;
  const s = await g.acquire("mx.busy", 8);
  g.observe("mx.busy", 8, [reply(250, "2.0.0", "delivered")]);
  s();
  // The streak ended with a delivery: the next pause is the first length again.
  const t = await g.acquire("mx.busy", 8);
  g.observe("mx.busy", 8, [reply(421, null)]);
  t();
  assert.equal(g.pausedUntil("mx.busy"), clock.now + 1000);
  // Other hosts are not affected.
  assert.equal(g.pausedUntil("mx.other"), null);
});

/** How many of `n` sessions asked for at once start without waiting; all are then run to their end. */
async function startsAtOnce(g: DestinationGate, host: string, limit: number, n: number): Promise<number> {
  let started = 0;
  const all = Array.from({ length: n }, () => g.acquire(host, limit).then((release) => (started++, release)));
  await new Promise((resolve) => setImmediate(resolve));
  const atOnce = started;
  for (const p of all) (await p)();
  return atOnce;
}

test("the cap grows back to the limit with deliveries, then no longer applies", async () => {
  const { g, clock } = gate("", 10);
  assert.equal(await startsAtOnce(g, "mx.h", 4, 6), 4);
  const two = [await g.acquire("mx.h", 4), await g.acquire("mx.h", 4)];
  g.observe("mx.h", 4, [reply(421, null)]);
  two.forEach((r) => r());
  clock.now += 11;
  assert.equal(await startsAtOnce(g, "mx.h", 4, 6), 1, "halved from two to one");
  g.observe("mx.h", 4, [reply(250, "2.0.0", "delivered")]);
  assert.equal(await startsAtOnce(g, "mx.h", 4, 6), 2);
  g.observe("mx.h", 4, [reply(250, "2.0.0", "delivered")]);
  assert.equal(await startsAtOnce(g, "mx.h", 4, 6), 3);
  g.observe("mx.h", 4, [reply(250, "2.0.0", "delivered")]);
  assert.equal(await startsAtOnce(g, "mx.h", 4, 6), 4, "back to the limit");
  assert.equal(await startsAtOnce(g, "mx.h", 6, 8), 6, "and no cap remains under a larger limit");
});
