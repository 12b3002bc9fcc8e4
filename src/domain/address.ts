// The only way an email address enters sealpost. Deliberately stricter than RFC 5322:
// an API for transactional mail needs `local@domain` and a display name, nothing
// more. Everything else the RFC allows (quoted local parts, comments, groups, route
// addresses, IP-literal domains, several mailboxes in one string) is where header
// injection and parser differentials live, so it is refused.

export interface Mailbox {
  address: string; // local@domain, domain lowercased
  name: string | null;
}

/** `list`: the input held several addresses, here one per item, so callers can show the array form. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; message: string; list?: string[] };

// RFC 5322 section 3.2.3 atext, used for dot-atom local parts.
const ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-";
const LOCAL_RE = new RegExp(`^[${ATEXT}]+(\\.[${ATEXT}]+)*$`);
const LABEL_RE = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const MAX_LOCAL = 64; // RFC 5321 section 4.5.3.1.1
const MAX_DOMAIN = 253;
const MAX_ADDRESS = 254; // RFC 5321 path limit minus the angle brackets
const MAX_NAME = 200;

// Anything that could end a header line or hide in one: CR, LF, NUL and other C0/C1 controls, DEL.
// eslint-disable-next-line no-control-regex
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

export function parseAddress(input: string): ParseResult<string> {
  if (CONTROL_CHARS.test(input)) return fail("must not contain control characters or line breaks");
  if (input.length > MAX_ADDRESS) return fail(`must be at most ${MAX_ADDRESS} characters`);
  const at = input.lastIndexOf("@");
  if (at <= 0 || at === input.length - 1) return fail("must be a plain address of the form local@domain");
  const local = input.slice(0, at);
  const domain = input.slice(at + 1).toLowerCase();
  if (local.includes("@")) return fail("must contain exactly one @");
  if (local.length > MAX_LOCAL) return fail(`local part must be at most ${MAX_LOCAL} characters`);
  if (!LOCAL_RE.test(local)) return fail("local part must be a dot-atom (no quotes, spaces, comments or brackets)");
  const d = parseDomain(domain);
  if (!d.ok) return d;
  return { ok: true, value: `${local}@${d.value}` };
}

export function parseDomain(domain: string): ParseResult<string> {
  if (domain.startsWith("[")) return fail("IP-literal domains are not accepted");
  if (domain.length > MAX_DOMAIN) return fail(`domain must be at most ${MAX_DOMAIN} characters`);
  const labels = domain.split(".");
  if (labels.length < 2) return fail("domain must have at least two labels");
  if (!labels.every((l) => LABEL_RE.test(l))) return fail("domain must be letters, digits and hyphens in dot-separated labels");
  // A numeric top-level label means the "domain" is an IPv4 address in disguise.
  if (/^\d+$/.test(labels[labels.length - 1]!)) return fail("IP addresses are not accepted as domains");
  return { ok: true, value: domain };
}

// `Name <local@domain>` or `"Quoted, Name" <local@domain>`; the unquoted name may not
// contain the specials that would make it a group, a comment or a list.
const NAMED_RE = /^\s*(?:"((?:[^"\\]|\\["\\])*)"|([^<>"(),;:@\\[\]]*?))\s*<([^<>]*)>\s*$/;

export function parseMailbox(input: string | { name?: string | null; address: string }): ParseResult<Mailbox> {
  if (typeof input !== "string") {
    const address = parseAddress(input.address);
    if (!address.ok) return address;
    const name = input.name == null || input.name === "" ? null : input.name;
    if (name !== null) {
      const n = checkName(name);
      if (!n.ok) return n;
    }
    return { ok: true, value: { address: address.value, name } };
  }
  if (CONTROL_CHARS.test(input)) return fail("must not contain control characters or line breaks");
  const list = splitList(input);
  if (list) return { ok: false, message: "must be one address; several addresses in one string are not accepted", list };
  if (!input.includes("<")) {
    const a = parseAddress(input.trim());
    return a.ok ? { ok: true, value: { address: a.value, name: null } } : a;
  }
  const m = NAMED_RE.exec(input);
  if (!m) return fail('must be "Name <local@domain>" or a plain address; groups, comments and lists are not accepted');
  const rawName = m[1] !== undefined ? m[1].replace(/\\(["\\])/g, "$1") : (m[2] ?? "").trim();
  const address = parseAddress(m[3]!);
  if (!address.ok) return address;
  const name = rawName === "" ? null : rawName;
  if (name !== null) {
    const n = checkName(name);
    if (!n.ok) return n;
  }
  return { ok: true, value: { address: address.value, name } };
}

const MAX_LIST_SHOWN = 5;

/**
 * The addresses of a string that holds several ("a@x.example, b@y.example", or separated
 * by ";" or spaces), or null when it does not look like a list. Commas inside a quoted
 * display name ("Smith, Alice" <alice@example.com>) do not separate; a ":" (group syntax)
 * or parentheses (a comment) mean something else, which has its own message.
 */
function splitList(input: string): string[] | null {
  const unquoted = input.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  if (/[:()]/.test(unquoted) || unquoted.split("@").length < 3) return null;
  const separator = /[,;]/.test(unquoted) ? /[,;]/ : unquoted.includes("<") ? null : /\s+/;
  if (!separator) return null;
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < input.length; i++) {
    const c = input[i]!;
    if (c === "\\" && quoted) {
      current += c + (input[++i] ?? "");
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (!quoted && separator.test(c)) {
      if (current.trim()) parts.push(current.trim());
      current = "";
    } else current += c;
  }
  if (current.trim()) parts.push(current.trim());
  return parts.length > 1 ? parts.slice(0, MAX_LIST_SHOWN) : null;
}

function checkName(name: string): ParseResult<string> {
  if (CONTROL_CHARS.test(name)) return fail("display name must not contain control characters or line breaks");
  if (name.length > MAX_NAME) return fail(`display name must be at most ${MAX_NAME} characters`);
  return { ok: true, value: name };
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1);
}

function fail(message: string): { ok: false; message: string } {
  return { ok: false, message };
}
