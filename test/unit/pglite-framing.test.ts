// The embedded database's protocol framing: a client's byte stream cut anywhere by TCP
// must give back exactly the messages that were sent, and the backend's answer cut
// anywhere must still show each ReadyForQuery status.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FrontendFramer, ProtocolError, ReadyForQueryScanner } from "../../src/db/pglite-server.ts";

const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const typed = (type: string, body: Buffer) => Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
const untyped = (code: number, body: Buffer) => Buffer.concat([int32(body.length + 8), int32(code), body]);

const SSL = untyped(80877103, Buffer.alloc(0));
const STARTUP = untyped(196608, Buffer.from("user\0postgres\0database\0postgres\0\0"));

/** Cut `bytes` at the given (sorted, deduplicated) offsets. */
function cut(bytes: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

test("frontend messages come out whole and in order however the stream is cut", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom("P", "B", "D", "E", "S", "Q", "H", "C"), fc.uint8Array({ maxLength: 3000 })), { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (msgs, offsets) => {
        const sent = msgs.map(([t, body]) => typed(t, Buffer.from(body)));
        const stream = Buffer.concat([SSL, STARTUP, ...sent]);
        const framer = new FrontendFramer();
        const got = cut(stream, offsets).flatMap((piece) => framer.push(piece));
        assert.deepEqual(got.map((m) => m.kind), ["ssl-request", "startup", ...sent.map(() => "message")]);
        assert.deepEqual(got.slice(2).map((m) => Buffer.from(m.bytes)), sent);
        assert.deepEqual(Buffer.from(got[1]!.bytes), STARTUP);
      },
    ),
    { numRuns: 300 },
  );
});

test("a one megabyte message in 64 KiB pieces is held back until its last byte", () => {
  const body = Buffer.alloc(1024 * 1024, 7);
  const stream = Buffer.concat([STARTUP, typed("B", body), typed("S", Buffer.alloc(0))]);
  const framer = new FrontendFramer();
  const seen: string[] = [];
  for (let i = 0; i < stream.length; i += 65_536) {
    for (const m of framer.push(stream.subarray(i, i + 65_536))) seen.push(m.kind === "message" ? m.type : m.kind);
    if (i + 65_536 < STARTUP.length + 5 + body.length) assert.ok(!seen.includes("B"), `no Bind before its last byte (offset ${i})`);
  }
  assert.deepEqual(seen, ["startup", "B", "S"]);
});

test("impossible lengths and protocols are refused, not waited for", () => {
  assert.throws(() => new FrontendFramer().push(untyped(0x00020000, Buffer.alloc(0))), ProtocolError);
  assert.throws(() => new FrontendFramer().push(Buffer.concat([int32(3), int32(196608)])), ProtocolError);
  const f = new FrontendFramer();
  f.push(STARTUP);
  assert.throws(() => f.push(Buffer.concat([Buffer.from("Q"), int32(2)])), ProtocolError);
});

test("each ReadyForQuery status is seen however the answer is cut", () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom("I", "T", "E"), { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 30 }), (statuses, offsets) => {
      // Rows whose bytes look like a ReadyForQuery must not fool the scanner.
      const decoy = typed("D", Buffer.from("Z\0\0\0\x05T"));
      const answer = Buffer.concat(statuses.flatMap((s) => [decoy, typed("C", Buffer.from("SELECT 1\0")), typed("Z", Buffer.from(s))]));
      const scanner = new ReadyForQueryScanner();
      const seen: Array<string | null> = [];
      for (const piece of cut(answer, offsets)) {
        scanner.push(piece);
        seen.push(scanner.status);
      }
      assert.equal(scanner.status, statuses[statuses.length - 1]);
    }),
    { numRuns: 300 },
  );
});
