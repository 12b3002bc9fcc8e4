// The JSON body parser. Fastify's own answers every syntax error with the same sentence;
// this one says where the body broke and what was expected there ("line 3, column 14:
// expected "," or "}" to close the object"), and refuses __proto__ and constructor.prototype
// keys as Fastify's does (secure-json-parse), so a body cannot alter the objects it is
// merged into. A valid body costs what it cost before (JSON.parse, then secure-json-parse's
// check for those keys); an error is located only on the error path, with jsonc-parser's
// scanner in strict JSON mode (no comments, no trailing commas).
import type { FastifyInstance } from "fastify";
import { printParseErrorCode, visit, type ParseErrorCode } from "jsonc-parser";
import secureJson from "secure-json-parse";
import { AppError } from "../../domain/errors.ts";

const WHAT: Record<string, string> = {
  InvalidSymbol: "this is not a JSON value",
  PropertyNameExpected: "expected a field name in double quotes",
  ValueExpected: "expected a value",
  ColonExpected: 'expected ":" after the field name',
  CommaExpected: 'expected ","',
  CloseBraceExpected: 'expected "," or "}" to close the object',
  CloseBracketExpected: 'expected "," or "]" to close the array',
  EndOfFileExpected: "unexpected text after the end of the JSON value",
  UnexpectedEndOfString: 'a string is not closed: it needs a closing " on the same line (write line breaks in strings as \\n)',
  InvalidEscapeCharacter: "invalid escape in a string: a backslash is written \\\\",
  InvalidUnicode: "invalid \\u escape in a string: it takes four hex digits",
  InvalidCharacter: "a control character inside a string: write line breaks as \\n and tabs as \\t",
  InvalidCommentToken: "comments are not allowed in JSON",
  UnexpectedEndOfComment: "comments are not allowed in JSON",
  InvalidNumberFormat: "a number is not written as JSON allows",
  UnexpectedEndOfNumber: "a number is not written as JSON allows",
};

/** Where and why `body` is not JSON, as one sentence. */
export function describeJsonError(body: string, err: unknown): string {
  if (err instanceof SyntaxError && /forbidden prototype property/.test(err.message))
    return 'the body has a "__proto__" or "constructor": {"prototype": ...} key, which is refused; no field of the API has that name';
  let first: { code: ParseErrorCode; offset: number; length: number; line: number; column: number; inside: string | undefined } | undefined;
  const open: string[] = []; // the objects and arrays the scanner is inside, up to the first error
  visit(
    body,
    {
      onObjectBegin: () => void (first || open.push("object")),
      onArrayBegin: () => void (first || open.push("array")),
      onObjectEnd: () => void (first || open.pop()),
      onArrayEnd: () => void (first || open.pop()),
      onError: (code, offset, length, line, column) => (first ??= { code, offset, length, line, column, inside: open.at(-1) }),
    },
    { disallowComments: true, allowTrailingComma: false },
  );
  if (!first) {
    // The two parsers disagree (should not happen): say what JSON.parse said, without the
    // excerpt of the body it quotes.
    const said = err instanceof Error ? err.message.replace(/,? ".*" is not valid JSON$/s, "").replace(/^Unexpected token/, "unexpected character") : "";
    return `the body is not valid JSON${said ? `: ${said}` : ""}`;
  }
  const name = printParseErrorCode(first.code);
  const where = `line ${first.line + 1}, column ${first.column + 1}`;
  if (first.offset >= body.trimEnd().length) return `the body is not valid JSON: it ends at ${where} before the JSON is complete (${WHAT[name] ?? "expected more"})`;
  let what = WHAT[name] ?? "the JSON is not valid here";
  // The offending text is looked at, never quoted back: line and column locate it.
  const token = body.slice(first.offset, first.offset + 1);
  if (name === "InvalidSymbol") {
    if (token.startsWith("'")) what = "single quotes: JSON strings and field names take double quotes";
    else if (/^[A-Za-z_$]/.test(token)) what = "a bare word: text values need double quotes, and the only bare words are true, false and null";
  }
  if (name === "CommaExpected")
    what = first.inside === "array" ? 'expected "," before the next item, or "]" to close the array' : 'expected "," before the next field, or "}" to close the object';
  if (name === "PropertyNameExpected" && body.slice(0, first.offset).trimEnd().endsWith(","))
    what = 'expected a field name after ","; JSON does not allow a comma after the last field';
  return `the body is not valid JSON at ${where}: ${what}`;
}

export function registerJsonBody(app: FastifyInstance): void {
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
    const text = body as string;
    if (text.length === 0) return done(new AppError("invalid_request", "the body is empty; send the request as a JSON object", { status: 400 }), undefined);
    try {
      done(null, secureJson.parse(text, { protoAction: "error", constructorAction: "error" }));
    } catch (err) {
      done(new AppError("invalid_request", describeJsonError(text, err), { status: 400 }), undefined);
    }
  });
}
