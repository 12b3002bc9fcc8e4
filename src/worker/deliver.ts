// One claimed delivery (one message, one recipient domain): load and decrypt the
// content, build the message, find the hosts (MX or relay), try them in order under
// the message's TLS policy, and turn the per-recipient outcomes into a completion.
import { isIP } from "node:net";
import { lookup } from "node:dns/promises";
import type pg from "pg";
import type { SmtpRelay } from "../config.ts";
import { deriveMessageStatus, FINAL_RECIPIENT_STATUSES, type Attachment } from "../domain/message.ts";
import { strictest, type TlsPolicy } from "../domain/tls-policy.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "../security/content-cipher.ts";
import { nextRetryDelay } from "./backoff.ts";
import { isPastLifetime } from "../domain/retry-lifetime.ts";
import { composeMessage } from "./compose.ts";
import type { MxResolution } from "./mx.ts";
import type { ClaimedDelivery, Completion, RecipientResult } from "../db/deliveries.ts";
import { findMessageToDeliver } from "../db/messages.ts";
import { cleartextEvidence, type AttemptEvidence } from "./smtp-evidence.ts";
import type { DeliveryOutcome, ReplyVerdict } from "./smtp-reply.ts";
import type { AttemptOptions, AttemptResult } from "./smtp-attempt.ts";

export interface DeliverySettings {
  serverPolicy: TlsPolicy;
  relay: SmtpRelay | null;
  mxPort: number;
  heloName: string;
  ca: string[];
  connectTimeoutMs: number;
  maxRetryMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** Connections tried for one delivery before deferring (RFC 5321 5.1 suggests trying at least two addresses). */
  maxHostsPerAttempt: number;
}

export interface DeliveryDeps {
  /** The process's pool (shared with Prisma): the worker's statements are its hot path. */
  pool: pg.Pool;
  cipher: ContentCipher;
  settings: DeliverySettings;
  resolveMx(domain: string): Promise<MxResolution>;
  attempt(opts: AttemptOptions): Promise<AttemptResult>;
  now?: () => Date;
}

/** The message as the composer needs it, decrypted; null when its content was purged. */
async function loadMessage(deps: DeliveryDeps, messageId: string) {
  const m = await findMessageToDeliver(deps.pool, messageId);
  if (!m) throw new Error(`message ${messageId} of a claimed delivery does not exist`);
  if (m.content_purged_at) return null;
  const dec = (col: string, v: Buffer | null) => (v === null ? null : deps.cipher.decrypt(v, contentAad(m.id, col)).toString("utf8"));
  const pick = (kind: string) => m.recipients.filter((r) => r.kind === kind).map((r) => ({ address: r.address, name: r.name }));
  return {
    fromAddress: m.from_address,
    allRecipients: m.recipients,
    content: {
      messageIdHeader: m.message_id_header,
      createdAt: m.created_at,
      from: { address: m.from_address, name: m.from_name },
      to: pick("to"),
      cc: pick("cc"),
      replyTo: m.reply_to ?? [],
      subject: dec("subject", m.subject) ?? "",
      text: dec("text_body", m.text_body),
      html: dec("html_body", m.html_body),
      headers: JSON.parse(dec("headers", m.headers) ?? "{}") as Record<string, string>,
      attachments: JSON.parse(dec("attachments", m.attachments) ?? "[]") as Attachment[],
    },
  };
}

interface Target {
  host: string;
  ip: string;
  port: number;
}

async function targetsFor(deps: DeliveryDeps, domain: string): Promise<{ targets: Target[] } | { fail: { outcome: Exclude<DeliveryOutcome, "delivered">; enhancedCode: string; reason: string } }> {
  const relay = deps.settings.relay;
  if (relay) {
    try {
      const ips = isIP(relay.host) ? [relay.host] : (await lookup(relay.host, { all: true })).map((a) => a.address);
      return { targets: ips.map((ip) => ({ host: relay.host, ip, port: relay.port })) };
    } catch (err) {
      return { fail: { outcome: "deferred", enhancedCode: "4.4.3", reason: `relay host ${relay.host} did not resolve (${(err as { code?: string }).code ?? "error"})` } };
    }
  }
  const r = await deps.resolveMx(domain);
  if (r.kind === "bounce") return { fail: { outcome: "bounced", enhancedCode: r.enhancedCode, reason: r.reason } };
  if (r.kind === "defer") return { fail: { outcome: "deferred", enhancedCode: r.enhancedCode, reason: r.reason } };
  return { targets: r.hosts.flatMap((h) => h.addresses.map((ip) => ({ host: h.host, ip, port: deps.settings.mxPort }))) };
}

/** Runs one attempt of a claimed delivery and returns what to record. */
export async function runDelivery(deps: DeliveryDeps, d: ClaimedDelivery, workerId: string): Promise<Completion> {
  const now = deps.now ?? (() => new Date());
  const policy = strictest(deps.settings.serverPolicy, d.tlsPolicy);
  const results = new Map<bigint, RecipientResult>(
    d.recipients.map((r) => [r.id, { recipientId: r.id, status: "deferred", replyCode: null, enhancedCode: null, replyText: null, attempts: [] }]),
  );
  const record = (rid: bigint, evidence: AttemptEvidence, o: ReplyVerdict) => {
    const r = results.get(rid)!;
    r.status = o.outcome;
    r.replyCode = o.replyCode;
    r.enhancedCode = o.enhancedCode;
    r.replyText = o.replyText;
    r.attempts.push({ evidence, ...o });
  };
  /** The same outcome for every recipient, decided here: no SMTP peer, no TLS behind it. */
  const decideAll = (outcome: DeliveryOutcome, enhancedCode: string, replyText: string, startedAt = now()) => {
    const evidence: AttemptEvidence = {
      ...cleartextEvidence(null), mxHost: null, ip: null, port: null, policy, startedAt, durationMs: Date.now() - startedAt.getTime(),
    };
    for (const r of d.recipients) record(r.id, evidence, { outcome, replyCode: null, enhancedCode, replyText });
  };

  /** Hosts in order until one takes the message; RFC 5321 5.1. */
  const deliver = async (loaded: NonNullable<Awaited<ReturnType<typeof loadMessage>>>) => {
    const startedAt = now();
    const raw = await composeMessage(loaded.content);
    const found = await targetsFor(deps, d.domain);
    if ("fail" in found) return decideAll(found.fail.outcome, found.fail.enhancedCode, found.fail.reason, startedAt);
    if (found.targets.length === 0) return decideAll("deferred", "4.4.4", `no address to deliver to for ${d.domain}`, startedAt);
    let remaining = d.recipients;
    for (const target of found.targets.slice(0, deps.settings.maxHostsPerAttempt)) {
      const result = await deps.attempt({
        target,
        policy,
        ...(deps.settings.relay?.implicitTls ? { implicitTls: true } : {}),
        ...(deps.settings.relay?.auth ? { auth: deps.settings.relay.auth } : {}),
        heloName: deps.settings.heloName,
        ca: deps.settings.ca,
        connectTimeoutMs: deps.settings.connectTimeoutMs,
        envelope: { from: loaded.fromAddress, to: remaining.map((r) => r.address) },
        message: raw,
      });
      remaining.forEach((r, i) => record(r.id, result.evidence, result.recipients[i]!));
      // The next MX only when this one could not take the message at all; never after
      // a 5xx to RCPT/DATA or once the data was handed over.
      if (!result.tryNextHost) break;
      remaining = remaining.filter((r) => results.get(r.id)!.status === "deferred");
      if (remaining.length === 0) break;
    }
  };

  let loaded: Awaited<ReturnType<typeof loadMessage>> = null;
  let unreadable: ContentDecryptError | null = null;
  try {
    loaded = d.recipients.length > 0 ? await loadMessage(deps, d.messageId) : null;
  } catch (err) {
    if (!(err instanceof ContentDecryptError)) throw err;
    unreadable = err;
  }
  if (unreadable?.reason === "unknown_key") {
    // Content under a key this worker was not given: it will be readable once the key is
    // deployed (a rotation that ran ahead of this process), so the delivery waits like
    // any temporary failure, and SMTP_MAX_RETRY still ends it. RFC 3463 X.3.5: the
    // system is not configured in a manner that will permit it to accept this message.
    decideAll("deferred", "4.3.5", `not sent yet: the content is encrypted under data key ${unreadable.keyId}, which this worker does not hold; add it to SEALPOST_DATA_KEY`);
  } else if (unreadable) {
    // Content that fails authentication under a key we hold (its check value proved the
    // key at start) was changed or damaged in storage: no retry can make it readable, and
    // garbage is never sent. The recipients fail at once with the reason.
    decideAll("bounced", "5.3.0", `not sent: ${unreadable.message}`);
    for (const r of results.values()) r.status = "failed";
  } else if (loaded) {
    await deliver(loaded);
  } else if (d.recipients.length > 0) {
    decideAll("bounced", "5.3.0", "message content was purged before delivery");
  }

  // SMTP_MAX_RETRY (Postfix maximal_queue_lifetime): past it, a deferral is final.
  const expired = isPastLifetime(d.createdAt, deps.settings.maxRetryMs, now());
  let anyDeferred = false;
  for (const r of results.values()) {
    if (r.status !== "deferred") continue;
    if (expired) {
      r.status = "failed";
      r.replyText = `gave up after ${d.attempt} attempts: ${r.replyText ?? "deferred"}`;
    } else anyDeferred = true;
  }
  const retryAt = anyDeferred
    ? new Date(now().getTime() + nextRetryDelay(d.attempt, deps.settings.retryMinMs, deps.settings.retryMaxMs))
    : null;
  // When this delivery holds every recipient of the message (one recipient domain, the
  // usual case), nobody else can change their statuses while we hold the lease, so the
  // message status is known here and the result is recorded in a single statement.
  let message: Completion["message"];
  if (loaded && loaded.allRecipients.every((r) => r.delivery_id === String(d.id))) {
    const statuses = loaded.allRecipients.map((r) => results.get(BigInt(r.id))?.status ?? r.status);
    message = { status: deriveMessageStatus(statuses), final: statuses.every((x) => FINAL_RECIPIENT_STATUSES.has(x)) };
  }
  return { delivery: d, workerId, results: [...results.values()], retryAt, ...(message ? { message } : {}) };
}
