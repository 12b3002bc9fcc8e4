// The suppression list (issue 13): addresses a sender domain no longer mails. What puts an
// address there, and how an entry reads.

/** hard_bounce: a receiver said the address does not exist; complaint: its owner reported our mail as spam; manual: added through the API or CLI. */
export const SUPPRESSION_REASONS = ["hard_bounce", "complaint", "manual"] as const;
export type SuppressionReason = (typeof SUPPRESSION_REASONS)[number];

// RFC 3463 codes that say the address itself is bad, for good: X.1.1 bad destination
// mailbox, X.1.2 bad destination system (the domain), X.1.3 bad mailbox syntax, X.1.6
// mailbox moved with no forwarding address, X.1.10 null MX (RFC 7505), X.2.1 mailbox
// disabled. Not X.1.7/X.1.8 (about our sender address), X.2.2 (mailbox full: it may
// empty), X.7.x (a policy or content refusal: spam blocks, DMARC, TLS) or anything else.
const ADDRESS_FAILURES = new Set(["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"]);

/**
 * Whether a recipient's final verdict puts its address on the list: a permanent (5xx)
 * reply from the receiver with an enhanced status code naming the address as bad. Decided
 * from the codes, never the text; a 5xx without an enhanced code is ambiguous (spam blocks
 * use 550 too) and does not suppress, nor does any temporary failure or our own verdict.
 */
export function isAddressFailure(v: { status: string; replyCode: number | null; enhancedCode: string | null }): boolean {
  return v.status === "bounced" && v.replyCode !== null && v.replyCode >= 500 && v.replyCode < 600 && ADDRESS_FAILURES.has(v.enhancedCode ?? "");
}
