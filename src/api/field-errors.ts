// Validation problems as a new user should read them: one entry per field, its JSON path
// (`to[1]`, `attachments[0].content`, `headers["X-Order"]`) and a sentence saying what is
// wrong and what is expected. zod's own wording ("Invalid input: expected string, received
// undefined") is replaced kind by kind; the "expected" part is the description of the
// field's schema, the same text openapi.yaml shows.
import { editDistance } from "../domain/edit-distance.ts";
import { z } from "zod";
import type { FieldError } from "../domain/errors.ts";

type Issue = z.core.$ZodIssue;
type Path = ReadonlyArray<PropertyKey>;

/** At most this many entries: a body of thousands of unknown keys must not make a huge answer. */
const MAX_FIELD_ERRORS = 50;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `["attachments", 0, "content"]` -> `attachments[0].content`; keys that are not identifiers are quoted. */
export function jsonPath(path: Path): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else {
      const key = String(seg);
      out += IDENTIFIER.test(key) ? (out ? `.${key}` : key) : `[${JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key)}]`;
    }
  }
  return out;
}

// ---- reading the schema at a path ------------------------------------------------

// zod's definitions, read only through these few fields.
interface Def {
  type: string;
  shape?: Record<string, Schema>;
  element?: Schema;
  valueType?: Schema;
  options?: Schema[];
  innerType?: Schema;
  in?: Schema;
  getter?: () => Schema;
}
type Schema = z.core.$ZodType;
const defOf = (s: Schema): Def => s._zod.def as unknown as Def;
const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "nonoptional", "readonly", "catch"]);

/** The schema itself and every schema it wraps (optional, default, pipe, ...), outermost first. */
function layers(s: Schema): Schema[] {
  const out = [s];
  for (let d = defOf(s); ; d = defOf(out[out.length - 1]!)) {
    const inner = WRAPPERS.has(d.type) ? d.innerType : d.type === "pipe" ? d.in : d.type === "lazy" ? d.getter?.() : undefined;
    if (!inner || out.length > 20) return out;
    out.push(inner);
  }
}

function childOf(s: Schema, seg: PropertyKey): Schema | undefined {
  const d = defOf(layers(s).at(-1)!);
  switch (d.type) {
    case "object":
      return typeof seg === "string" ? d.shape?.[seg] : undefined;
    case "array":
      return typeof seg === "number" ? d.element : undefined;
    case "record":
      return d.valueType;
    case "union":
      for (const o of d.options ?? []) {
        const c = childOf(o, seg);
        if (c) return c;
      }
      return undefined;
    default:
      return undefined;
  }
}

function schemaAt(root: Schema | undefined, path: Path): Schema | undefined {
  let s = root;
  for (const seg of path) s = s && childOf(s, seg);
  return s;
}

/** The field's description, as a phrase to follow "required; " or "must be ". */
function expected(s: Schema | undefined): string | undefined {
  for (const l of s ? layers(s) : []) {
    const d = z.globalRegistry.get(l)?.description;
    if (d) return d.charAt(0).toLowerCase() + d.slice(1).replace(/\.$/, "");
  }
  return undefined;
}

const isOptional = (s: Schema | undefined) => (s ? layers(s).some((l) => defOf(l).type === "optional") : false);

function objectKeys(s: Schema | undefined): string[] | undefined {
  for (const l of s ? layers(s) : []) {
    const d = defOf(l);
    if (d.type === "object") return Object.keys(d.shape ?? {});
    if (d.type === "union") {
      // The object branch of a union such as "address string or {name, address}".
      for (const o of d.options ?? []) {
        const keys = objectKeys(o);
        if (keys) return keys;
      }
    }
  }
  return undefined;
}

// ---- wording -----------------------------------------------------------------------

const TYPE_NAMES: Record<string, string> = {
  string: "a string", number: "a number", int: "a whole number", boolean: "true or false", object: "a JSON object",
  array: "an array", null: "null", bigint: "a number", date: "a date",
};

function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return "a number";
  if (typeof v === "boolean") return `${v}`;
  return typeof v;
}

// zod's default messages start like this; a message we gave a check does not.
const ZOD_DEFAULT = /^(Invalid|Too (big|small)|Unrecognized key|Expected)/;

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// Names other mail APIs use for a field this one names differently.
const ALIASES: Record<string, string[]> = {
  body: ["text", "html"], content: ["text", "html"], message: ["text", "html"], plain: ["text"],
  recipient: ["to"], recipients: ["to"], sender: ["from"], attachment: ["attachments"], files: ["attachments"],
};

/** A known field name close to a mistyped one ("reply-to" -> "reply_to", "body" -> "text" or "html"). */
function suggest(key: string, allowed: string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/-/g, "_");
  const k = norm(key);
  // Own keys only: "constructor" or "__proto__" would find Object.prototype's.
  const alias = Object.hasOwn(ALIASES, k) ? ALIASES[k]!.filter((a) => allowed.includes(a)) : undefined;
  if (alias && alias.length > 0) return alias.join('" or "');
  const exact = allowed.find((a) => norm(a) === k || norm(a) === `${k}s` || `${norm(a)}s` === k);
  if (exact) return exact;
  const close = allowed.filter((a) => editDistance(norm(a), k) <= (a.length > 4 ? 2 : 1));
  return close.length === 1 ? close[0] : undefined;
}

/** A union member that failed only because the value has another type ("expected string, received object"). */
function isTypeMismatch(issues: readonly Issue[]): boolean {
  if (issues.length !== 1 || issues[0]!.path.length > 0) return false;
  const i = issues[0]!;
  return i.code === "invalid_type" || (i.code === "invalid_union" && i.errors.every(isTypeMismatch));
}

function translate(issue: Issue, root: Schema | undefined, prefix: Path, out: FieldError[]): void {
  const path = [...prefix, ...issue.path];
  const at = jsonPath(path);
  const schema = schemaAt(root, path);
  const exp = expected(schema);
  const input = (issue as { input?: unknown }).input;
  const push = (message: string, p = at): void => {
    out.push({ path: p || "(body)", message });
  };

  switch (issue.code) {
    case "invalid_union": {
      // Of "an address string or {name, address}", report the branch that matches the
      // value's type; when none does, the value has the wrong type for the field.
      const matching = issue.errors.filter((e) => !isTypeMismatch(e));
      if (matching.length > 0) {
        for (const i of matching[0]!) translate(i, root, path, out);
        return;
      }
      return translate({ code: "invalid_type", expected: "object", path: issue.path, message: "", input } as Issue, root, prefix, out);
    }
    case "invalid_type": {
      const what = exp ?? TYPE_NAMES[issue.expected] ?? issue.expected;
      if (path.length === 0)
        return push(input === undefined ? "the request needs a JSON object as its body" : `the body must be a JSON object, not ${describeValue(input)}`);
      if (input === undefined) return push(`required; ${what}`);
      // A query parameter coerced to a number arrives as NaN when it is not one.
      if (typeof input === "number" && Number.isNaN(input)) return push(`must be ${what}`);
      if (input === null && isOptional(schema)) return push(`must be ${what}, not null; leave the field out instead`);
      return push(`must be ${what}, not ${describeValue(input)}`);
    }
    case "too_big": {
      if (!ZOD_DEFAULT.test(issue.message)) return push(issue.message);
      const max = Number(issue.maximum);
      const size = typeof input === "string" || Array.isArray(input) ? input.length : undefined;
      const got = size === undefined ? "" : `; this one has ${size}`;
      if (issue.origin === "string") return push(`must be at most ${plural(max, "character")}${got}`);
      if (issue.origin === "array" || issue.origin === "set") return push(`must have at most ${plural(max, "item")}${got}`);
      return push(`must be at most ${max}`);
    }
    case "too_small": {
      if (!ZOD_DEFAULT.test(issue.message)) return push(issue.message);
      const min = Number(issue.minimum);
      const hint = exp ? `; ${exp}` : "";
      if (issue.origin === "string") return push(min === 1 ? `must not be empty${hint}` : `must be at least ${plural(min, "character")}${hint}`);
      if (issue.origin === "array" || issue.origin === "set") return push(min === 1 ? `must have at least one item${hint}` : `must have at least ${plural(min, "item")}${hint}`);
      return push(`must be at least ${min}`);
    }
    case "unrecognized_keys": {
      const allowed = objectKeys(schema);
      for (const key of issue.keys) {
        const guess = allowed && suggest(key, allowed);
        const message = guess
          ? `unknown field; did you mean "${guess}"?`
          : allowed
            ? `unknown field; the fields here are ${allowed.join(", ")}`
            : "unknown field";
        push(message, jsonPath([...path, key]));
      }
      return;
    }
    case "invalid_key": {
      // A record's key (a header or metadata name): its own check says what is wrong.
      const inner = issue.issues.find((i) => !ZOD_DEFAULT.test(i.message));
      return push(inner?.message ?? "is not an accepted name here");
    }
    case "invalid_value": {
      const values = issue.values.map((v) => JSON.stringify(v));
      const list = values.length <= 2 ? values.join(" or ") : `${values.slice(0, -1).join(", ")} or ${values.at(-1)}`;
      return push(input === undefined ? `required; one of ${list}` : `must be ${list}`);
    }
    case "invalid_format":
      return push(ZOD_DEFAULT.test(issue.message) ? (exp ? `must be ${exp}` : `is not in the expected format (${issue.format})`) : issue.message);
    case "not_multiple_of":
      return push(`must be a multiple of ${String(issue.divisor)}`);
    case "invalid_element":
    case "custom":
    default:
      return push(ZOD_DEFAULT.test(issue.message) && exp ? `must be ${exp}` : issue.message);
  }
}

/**
 * The problems of a failed parse, worded for people. `schema` is the one that was
 * parsed (for field descriptions and allowed keys); parse with `reportInput: true` so
 * that "required" can be told from "wrong type".
 */
export function fieldErrors(error: z.ZodError, schema?: z.ZodType): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) {
    translate(issue as Issue, schema, [], out);
    if (out.length >= MAX_FIELD_ERRORS) break;
  }
  return out.slice(0, MAX_FIELD_ERRORS);
}
