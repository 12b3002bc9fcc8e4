// Validation problems in plain words: every kind of zod issue the send schema can
// produce is named by its JSON path and explained without zod's wording.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { SendRequestSchema } from "../../src/domain/message.ts";
import { fieldErrors, jsonPath } from "../../src/api/field-errors.ts";
import type { FieldError } from "../../src/domain/errors.ts";

const base = { from: "Shop <noreply@shop.example>", to: "alice@example.com", subject: "Receipt", text: "Thanks" };
const ZOD_WORDING = /Invalid input|Invalid option|expected \w+, received|Too (big|small)|Unrecognized key|Invalid key in record|Invalid ISO|Invalid string/;
const JSON_PATH = /^(\(body\)|([A-Za-z_]\w*|\["(?:[^"\\]|\\.)*"\])(\.[A-Za-z_]\w*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*)$/;

function problems(input: unknown): FieldError[] {
  const r = SendRequestSchema.safeParse(input, { reportInput: true });
  assert.equal(r.success, false, `refused: ${JSON.stringify(input)?.slice(0, 200)}`);
  return fieldErrors(r.error!, SendRequestSchema);
}

test("JSON paths: indexes in brackets, names after dots, other keys quoted", () => {
  assert.equal(jsonPath(["attachments", 0, "content"]), "attachments[0].content");
  assert.equal(jsonPath(["to", 1]), "to[1]");
  assert.equal(jsonPath(["headers", "X-Order"]), 'headers["X-Order"]');
  assert.equal(jsonPath(["headers", 'a"\r\n']), 'headers["a\\"\\r\\n"]');
  assert.equal(jsonPath(["reply-to"]), '["reply-to"]');
  assert.equal(jsonPath([]), "");
});

// One input per kind of issue the send schema can produce, with what it must say.
const KINDS: Array<[kind: string, input: unknown, path: string, says: RegExp]> = [
  ["invalid_type, missing (required)", { ...base, subject: undefined }, "subject", /^required; a string of 1 to 998 characters without line breaks$/],
  ["invalid_type, wrong type", { ...base, text: 42 }, "text", /^must be the plain-text body, a string of at most 5000000 characters; .*, not a number$/],
  ["invalid_type, null for an optional field", { ...base, tags: null }, "tags", /, not null; leave the field out instead$/],
  ["invalid_type, the body itself", [base], "(body)", /^the body must be a JSON object, not an array$/],
  ["invalid_type inside a record", { ...base, metadata: { order: 4711 } }, "metadata.order", /^must be a string, not a number$/],
  ["invalid_union, wrong type for an address", { ...base, from: true }, "from", /^must be an address such as "Shop <noreply@shop\.example>" or \{"name": "Shop", "address": "noreply@shop\.example"\}, not true$/],
  ["invalid_union, missing address", { ...base, from: undefined }, "from", /^required; an address such as/],
  ["invalid_union, object form missing its address", { ...base, from: { name: "Shop" } }, "from.address", /^required; the address alone, such as "noreply@shop\.example"$/],
  ["invalid_union, wrong item in a recipient array", { ...base, to: ["alice@example.com", {}] }, "to[1].address", /^required; /],
  ["too_big, string", { ...base, subject: "s".repeat(999) }, "subject", /^must be at most 998 characters; this one has 999$/],
  ["too_big, array with its own words", { ...base, attachments: Array(21).fill({ filename: "a", content: "QQ==", content_type: "text/plain" }) }, "attachments", /^at most 20 attachments$/],
  ["too_big, record", { ...base, headers: Object.fromEntries(Array.from({ length: 31 }, (_, i) => [`X-H${i}`, "v"])) }, "headers", /^at most 30 headers$/],
  ["too_small, empty string", { ...base, subject: "" }, "subject", /^must not be empty; a string of 1 to 998 characters/],
  ["unrecognized_keys, top level", { ...base, sender: "x" }, "sender", /^unknown field; did you mean "from"\?$/],
  // Names of Object.prototype's own properties are unknown fields like any other.
  ["unrecognized_keys, constructor", { ...base, constructor: 1 }, "constructor", /^unknown field; the fields here are from, to/],
  ["unrecognized_keys, __proto__", { ...base, from: JSON.parse('{"__proto__": 0}') }, "from.__proto__", /^unknown field; the fields here are name, address$/],
  ["unrecognized_keys, nested", { ...base, attachments: [{ filename: "a", content: "QQ==", content_type: "text/plain", encoding: "base64" }] }, "attachments[0].encoding", /^unknown field; the fields here are filename, content, content_type, content_id$/],
  ["invalid_format, regex", { ...base, tags: ["no spaces please"] }, "tags[0]", /^must be 1-64 characters from A-Z a-z 0-9 _ \. : -$/],
  ["invalid_format, datetime", { ...base, send_at: "2030-01-01" }, "send_at", /^must be an ISO 8601 time with a time zone/],
  ["invalid_value, enum", { ...base, tls: "strict" }, "tls", /^must be "opportunistic" or "required"$/],
  ["invalid_key, record key", { ...base, headers: { Subject: "x" } }, "headers.Subject", /^is not a custom header name: names start with X-/],
  ["custom, address rule", { ...base, to: "alice@[127.0.0.1]" }, "to", /^IP-literal domains are not accepted$/],
  ["custom, several addresses", { ...base, bcc: "a@x.example; b@y.example" }, "bcc", /^one address per string; for several recipients use an array with one address per item: \["a@x\.example", "b@y\.example"\]$/],
  ["custom, base64", { ...base, attachments: [{ filename: "a", content: "QQ", content_type: "text/plain" }] }, "attachments[0].content", /which is not a multiple of 4/],
  ["custom, line break", { ...base, headers: { "X-A": "a\r\nb" } }, 'headers["X-A"]', /^must not contain line breaks/],
];

for (const [kind, input, path, says] of KINDS) {
  test(`issue kind ${kind}: ${path}`, () => {
    const errors = problems(input);
    const e = errors.find((x) => x.path === path);
    assert.ok(e, `${path} in ${JSON.stringify(errors)}`);
    assert.match(e.message, says);
    for (const x of errors) assert.doesNotMatch(x.message, ZOD_WORDING, JSON.stringify(x));
  });
}

test("property: any value in any field is explained with a JSON path and without zod's wording", () => {
  const fields = ["from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers", "attachments", "tags", "metadata", "tls", "send_at", "extra"];
  const value = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.array(fc.record({ filename: fc.string(), content: fc.string(), content_type: fc.string(), path: fc.string() }, { requiredKeys: [] }), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }),
  );
  fc.assert(
    fc.property(fc.constantFrom(...fields), value, (field, v) => {
      const r = SendRequestSchema.safeParse({ ...base, [field]: v }, { reportInput: true });
      if (r.success) return;
      const errors = fieldErrors(r.error, SendRequestSchema);
      assert.ok(errors.length > 0);
      for (const e of errors) {
        assert.match(e.path, JSON_PATH, JSON.stringify(e));
        assert.doesNotMatch(e.message, ZOD_WORDING, JSON.stringify(e));
      }
    }),
    { numRuns: 3000 },
  );
});

test("a flood of unknown fields gives a bounded list", () => {
  const body = { ...base, ...Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`junk${i}`, 1])) };
  assert.equal(problems(body).length, 50);
});
