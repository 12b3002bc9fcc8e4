// Concurrent senders for outage tests: fire many POST /send (and /send/batch) at once,
// time each answer, and check the outage contract: 202, or 503 service_unavailable with
// Retry-After; never a 500.
import assert from "node:assert/strict";
import { validSend, type TestApp } from "./app.ts";
import type { Response } from "./https-client.ts";
import type { ProblemView, SendBatchResponseView } from "../../src/api/schemas.ts";

export interface Answer {
  what: string;
  status: number;
  ms: number;
  retryAfter: string | undefined;
  code: string | undefined;
  body: string;
}

async function answer(what: string, call: Promise<Response>): Promise<Answer> {
  const started = Date.now();
  const r = await call;
  let code: string | undefined;
  try {
    code = (r.json() as Partial<ProblemView>).code;
  } catch {
    code = undefined;
  }
  const ra = r.headers["retry-after"];
  return { what, status: r.status, ms: Date.now() - started, retryAfter: Array.isArray(ra) ? ra[0] : ra, code, body: r.body };
}

/**
 * `senders` POST /send and `batches` POST /send/batch (two messages each) at once, every
 * message tagged `tag` so a test can count what was stored.
 */
export function sendConcurrently(t: TestApp, key: string, opts: { senders: number; batches?: number; tag: string }): Promise<Answer[]> {
  const body = () => validSend({ tags: [opts.tag] });
  return Promise.all([
    ...Array.from({ length: opts.senders }, () => answer("POST /send", t.call("POST", "/send", { key, body: body() }))),
    ...Array.from({ length: opts.batches ?? 0 }, () =>
      answer("POST /send/batch", t.call("POST", "/send/batch", { key, body: { messages: [body(), body()] } }))),
  ]);
}

/** Every answer is 202 (200 for a batch) or a 503 service_unavailable with an integer Retry-After; none is 500. */
export function assertAcceptedOrUnavailable(answers: Answer[], scenario: string): void {
  for (const a of answers) {
    if (a.status === 202) continue;
    if (a.status === 200) {
      // A batch answers 200 when some of its messages were accepted; the others carry their problem.
      for (const item of (JSON.parse(a.body) as SendBatchResponseView).data)
        if ("error" in item) assert.equal(item.error.code, "service_unavailable", `${scenario}, ${a.what}: ${a.body}`);
      continue;
    }
    assert.equal(a.status, 503, `${scenario}, ${a.what}: ${a.status} ${a.body}`);
    assert.equal(a.code, "service_unavailable", `${scenario}, ${a.what}: ${a.body}`);
    assert.match(a.retryAfter ?? "", /^[1-9][0-9]*$/, `${scenario}, ${a.what}: a 503 says when to retry`);
  }
}

/** Statuses and the slowest answer, for assertion messages. */
export function summary(answers: Answer[]): string {
  const by = new Map<number, number>();
  for (const a of answers) by.set(a.status, (by.get(a.status) ?? 0) + 1);
  return `${[...by].map(([s, n]) => `${n}x${s}`).join(" ")}, slowest ${Math.max(...answers.map((a) => a.ms))} ms`;
}
