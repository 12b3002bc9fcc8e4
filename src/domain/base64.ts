// Strict, linear-time check of standard base64 (RFC 4648 section 4) for attachment
// content. A regular expression that matches the whole string group by group (the
// obvious /^(?:[A-Za-z0-9+/]{4})*...$/) recurses once per group in V8 and overflows its
// stack at about 3 MiB, so the check below makes one pass for the alphabet and looks
// only at the last few characters for the padding. Nothing here allocates a copy of the
// content.

export type Base64Check = { ok: true; bytes: number } | { ok: false; message: string };

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
// One character class, no quantifier: a scan for the first character outside the
// alphabet, which cannot backtrack and needs no stack.
const OUTSIDE_ALPHABET = /[^A-Za-z0-9+/=]/;

const WHITESPACE: Record<string, string> = { " ": "a space", "\t": "a tab", "\r": "a line break", "\n": "a line break" };

/**
 * Checks `s` is standard base64 on one line: the alphabet A-Z a-z 0-9 + /, a length that
 * is a multiple of 4, at most two "=" and only at the end, and zero bits after the last
 * byte (RFC 4648 section 3.5), so each byte string has exactly one accepted encoding.
 * RFC 4648 section 3.3 says to reject characters outside the alphabet; that includes the
 * line breaks of MIME's wrapped form (RFC 2045), which `base64 -w 0` or any library's
 * plain encoder avoids. Returns the decoded size in bytes.
 */
export function checkBase64(s: string): Base64Check {
  const bad = s.search(OUTSIDE_ALPHABET);
  if (bad !== -1) {
    const c = s[bad]!;
    const at = `at character ${bad + 1}`;
    if (WHITESPACE[c])
      return fail(`has ${WHITESPACE[c]} ${at}; send the base64 on one line without spaces or line breaks (for example base64 -w 0)`);
    if (c === "-" || c === "_")
      return fail(`has "${c}" ${at}, from the URL-safe alphabet; use standard base64, which has + and / instead of - and _`);
    const shown = /^[\x21-\x7e]$/.test(c) ? `"${c}"` : `the character U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
    return fail(`has ${shown} ${at}, which is not base64; standard base64 uses only A-Z a-z 0-9 + / and = padding at the end`);
  }
  const firstPad = s.indexOf("=");
  const padding = firstPad === -1 ? 0 : s.length - firstPad;
  if (firstPad !== -1 && (padding > 2 || (padding === 2 && s[s.length - 1] !== "=")))
    return fail(`has "=" at character ${firstPad + 1}; "=" may only appear at the very end, once or twice`);
  if (s.length % 4 !== 0)
    return fail(`is ${s.length} characters long, which is not a multiple of 4: standard base64 is padded with "=" to whole groups of 4 (is it cut short, or unpadded?)`);
  if (padding > 0) {
    const last = ALPHABET.indexOf(s[s.length - padding - 1]!);
    // With "==" the last character carries 2 bits of data and 4 of padding, with "="
    // it carries 4 bits and 2 of padding: the padding bits must be zero.
    if ((last & (padding === 2 ? 0x0f : 0x03)) !== 0)
      return fail(`is not canonical base64: the character before the "=" padding has bits set that encode no data (was it altered or cut short?)`);
  }
  return { ok: true, bytes: (s.length / 4) * 3 - padding };
}

function fail(message: string): Base64Check {
  return { ok: false, message };
}

/** Decoded size of base64 that checkBase64 accepted, from its length alone. */
export function base64Size(s: string): number {
  const padding = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  return (s.length / 4) * 3 - padding;
}
