// Lowercase base32 (RFC 4648 section 6 alphabet, no padding) for tokens people and mail
// systems pass around: API key secrets, bounce address tokens. Lowercase, because a mail
// local part may come back with its case changed, and an API key reads more easily.
const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

export function base32(buf: Buffer): string {
  let bits = 0, value = 0, out = "";
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

/** The bytes of lowercase base32 text; null when it holds a character outside the alphabet. */
export function fromBase32(text: string): Buffer | null {
  const out: number[] = [];
  let bits = 0, value = 0;
  for (const ch of text) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) return null;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
