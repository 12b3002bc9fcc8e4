// Malformed JSON bodies are located by line and column with what was expected there,
// and the body's own text is never quoted back.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { describeJsonError } from "../../src/api/plugins/json-body.ts";

const base = { from: "Shop <noreply@shop.example>", to: "alice@example.com", subject: "Receipt", text: "Thanks" };

test("malformed JSON: the line and column where it broke, and what was expected there", () => {
  const cases: Array<[string, RegExp]> = [
    ['{"a": 1,\n "b": 2,\n}', /^the body is not valid JSON at line 3, column 1: expected a field name after ","; JSON does not allow a comma after the last field$/],
    ['{"a": 1\n "b": 2}', /at line 2, column 2: expected "," before the next field, or "}" to close the object$/],
    ['{"a": {"b": 1}', /^the body is not valid JSON: it ends at line 1, column 15 before the JSON is complete \(expected "," or "}" to close the object\)$/],
    ['{"a" 1}', /at line 1, column 6: expected ":" after the field name$/],
    ["{'a': 1}", /at line 1, column 2: single quotes/],
    ['{"a": [1, 2}', /at line 1, column 12: expected "," before the next item, or "]" to close the array$/],
    ['{"a": "\\q"}', /at line 1, column 7: invalid escape in a string/],
    ['{"a": 1} {"b": 2}', /at line 1, column 10: unexpected text after the end of the JSON value$/],
    ['{"a": ', /^the body is not valid JSON: it ends at line 1, column 7 before the JSON is complete \(expected a value\)$/],
    ['{"a": "unterminated', /at line 1, column 7: a string is not closed/],
    ['{"__proto__": {"x": 1}}', /"__proto__" or "constructor"/],
  ];
  for (const [body, says] of cases) {
    let err: unknown;
    try {
      JSON.parse(body);
      if (body.includes("__proto__")) throw new SyntaxError("Object contains forbidden prototype property");
    } catch (e) {
      err = e;
    }
    assert.match(describeJsonError(body, err), says, body);
  }
});

test("property: a corrupted JSON body is always located, and its text is not echoed back", () => {
  const good = JSON.stringify({ ...base, subject: "secret-marker-subject", metadata: { order: "4711" } }, null, 2);
  fc.assert(
    fc.property(fc.nat(good.length), fc.constantFrom("", ",", "}", "]", "'", ":", "x", "\n", '"', "\\"), fc.boolean(), (at, insert, cut) => {
      const body = cut ? good.slice(0, at) + insert : good.slice(0, at) + insert + good.slice(at);
      let err: unknown;
      try {
        JSON.parse(body);
        return;
      } catch (e) {
        err = e;
      }
      const said = describeJsonError(body, err);
      assert.match(said, /line \d+, column \d+/, `${JSON.stringify(body)} -> ${said}`);
      assert.doesNotMatch(said, /secret-marker/, said);
    }),
    { numRuns: 2000 },
  );
});
