// Delivery tests send through the real API and read the outcome back through it: these
// helpers post a message and wait (by polling with a deadline) for the worker's verdict.
import assert from "node:assert/strict";
import { validSend, type TestApp } from "./app.ts";
import { waitFor } from "./wait.ts";
import type { MessageView, SendResponseView } from "../../src/api/schemas.ts";

// The view of GET /messages/{id}, as the contract defines it (src/api/schemas.ts).
export type { MessageView } from "../../src/api/schemas.ts";

const FINAL_STATUSES = ["delivered", "partially_delivered", "bounced", "failed", "cancelled"];

/** POST /send with validSend() defaults overridden by `body`; returns the new message id. */
export async function sendMessage(app: TestApp, key: string, body: Record<string, unknown>): Promise<string> {
  const r = await app.call("POST", "/send", { key, body: validSend(body) });
  assert.equal(r.status, 202, r.body);
  return (r.json() as SendResponseView).id;
}

export async function getMessage(app: TestApp, key: string, id: string): Promise<MessageView> {
  const r = await app.call("GET", `/messages/${id}`, { key });
  assert.equal(r.status, 200, r.body);
  return r.json() as MessageView;
}

/**
 * Waits until the message has one of `statuses` (default: any final one), and `until` holds
 * if given. On timeout the error carries the last state and the tail of `logs`, which is
 * what one needs to debug it.
 */
export async function waitForMessage(
  app: TestApp,
  key: string,
  id: string,
  statuses: string[] = FINAL_STATUSES,
  opts: { timeoutMs?: number; logs?: string[]; until?: (m: MessageView) => boolean } = {},
): Promise<MessageView> {
  return waitFor(
    async () => {
      const m = await getMessage(app, key, id);
      return statuses.includes(m.status) && (opts.until?.(m) ?? true) ? m : null;
    },
    { what: `message ${id} to be ${statuses.join(" or ")}`, timeoutMs: opts.timeoutMs ?? 15_000 },
  ).catch(async (err: Error) => {
    const last = await app.call("GET", `/messages/${id}`, { key });
    const state = last.body.length > 3000 ? `${last.body.slice(0, 3000)}...` : last.body;
    throw new Error(`${err.message}; last state: ${state}; worker log: ${(opts.logs ?? []).slice(-5).join("")}`);
  });
}

/** The Message-ID header of a raw RFC 5322 message (RFC 5322 section 3.6.4). */
export function messageIdOf(raw: Buffer): string | null {
  const head = raw.toString("utf8").split(/\r?\n\r?\n/, 1)[0] ?? "";
  return /^Message-ID:\s*(<[^>\r\n]+>)/im.exec(head)?.[1] ?? null;
}
