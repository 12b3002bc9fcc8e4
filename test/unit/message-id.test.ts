// Message ids are UUIDv7 (RFC 9562 section 5.7): checked with zod's RFC 9562 validator
// for version 7, and the time read back from the first 48 bits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { newMessageId } from "../../src/services/send-message.ts";

const V7 = z.uuidv7();

test("a message id is a UUIDv7 carrying the millisecond it was made", () => {
  for (const ms of [0, 1, Date.UTC(2026, 11, 4, 23, 30), 2 ** 48 - 1]) {
    const id = newMessageId(ms);
    assert.ok(V7.safeParse(id).success, `${id} is not a UUIDv7`);
    assert.equal(parseInt(id.slice(0, 8) + id.slice(9, 13), 16), ms);
  }
});

test("ids made later sort after earlier ones, and ids of one millisecond still differ", () => {
  const t = Date.UTC(2026, 11, 4);
  const same = new Set(Array.from({ length: 1000 }, () => newMessageId(t)));
  assert.equal(same.size, 1000);
  const earlier = newMessageId(t), later = newMessageId(t + 1);
  assert.ok(earlier < later, `${earlier} !< ${later}`);
});
