// One claimed delivery (one message, one recipient domain): decrypt the content the
// claim loaded, build the message, find the hosts (MX or relay), try them in order under
// the message's TLS policy, and turn the per-recipient outcomes into a completion.
import { isIP } from "node:net";
import { createHash } from "node:crypto";
import { lookup } from "node:dns/promises";
import type pg from "pg";
import type { SmtpRelay } from "../config.ts";
import { deriveMessageStatus, FINAL_RECIPIENT_STATUSES, type Attachment } from "../domain/message.ts";
import { strictestLayer, type TlsPolicy } from "../domain/tls-policy.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "../security/content-cipher.ts";
import { nextRetryDelay } from "./backoff.ts";
import { isPastLifetime } from "../domain/retry-lifetime.ts";
import { composeMessage } from "./compose.ts";
import type { MxResolution } from "./mx.ts";
import type { ClaimedDelivery, Completion, MessageToDeliver, RecipientResult } from "../db/deliveries.ts";
import { cleartextEvidence } from "./smtp-evidence.ts";
import { localVerdict } from "./smtp-reply.ts";
import type { AttemptEvidence, ReplyVerdict } from "../domain/evidence.ts";
import type { AttemptOptions, AttemptResult } from "./smtp-attempt.ts";
import type { EnvelopeSenders } from "./envelope-sender.ts";
import type { DestinationGate } from "./destinations.ts";
import { domainPolicy, finishDetail, planHosts, ruledOutDetail, type DomainPolicy, type PolicyLayersSource } from "./policy-layers.ts";

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
  /** Adds DKIM signatures for the From domain when it is a verified sender domain (DKIM_SIGNING=on). */
  signer?: { sign(raw: Buffer, fromAddress: string): Promise<{ message: Buffer; selectors: string[] }> };
  /** Sessions per receiving host and throttling pauses (destinations.ts); without it, no limit. */
  destinations?: DestinationGate;
  /** The operator's TLS policy map and MTA-STS (policy-layers.ts); without it, only the server's, key's and message's policies. */
  layers?: PolicyLayersSource;
  /** Bounce addresses (envelope-sender.ts); without it, MAIL FROM is always the From address. */
  envelopeSenders?: Pick<EnvelopeSenders, "bounceDomainOf" | "address">;
  now?: () => Date;
}

/** The claimed message as the composer needs it, decrypted; null when its content was purged. */
function loadMessage(deps: DeliveryDeps, m: MessageToDeliver) {
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

type LoadedMessage = NonNullable<ReturnType<typeof loadMessage>>;

/** A message ready to send: built, signed, and the bounce domain of its envelope sender (or null). */
interface ReadyMessage {
  loaded: LoadedMessage;
  raw: Buffer;
  dkimSelectors: string[];
  /** SHA-256 (hex) of `raw`: a delivery receipt names the exact bytes delivered. */
  sha256: string;
  bounceDomain: string | null;
}

/** A delivery's message ready to send, or why nothing is sent. */
export type PreparedMessage = ReadyMessage | { notSent: NotSent | null };

/**
 * Decrypts, builds and signs the message of a claimed delivery. The claim loop starts this
 * when a delivery is claimed, so the message is ready when a slot frees up: building it
 * takes several turns of the event loop, which would otherwise hold the slot's SMTP session idle.
 */
export async function prepareMessage(deps: DeliveryDeps, d: ClaimedDelivery): Promise<PreparedMessage> {
  const content = loadContent(deps, d);
  if (!("loaded" in content)) return content;
  const [composed, bounceDomain] = await Promise.all([
    composeMessage(content.loaded.content),
    deps.envelopeSenders ? deps.envelopeSenders.bounceDomainOf(content.loaded.fromAddress) : null,
  ]);
  const { message: raw, selectors: dkimSelectors } = deps.signer ? await deps.signer.sign(composed, content.loaded.fromAddress) : { message: composed, selectors: [] };
  return { loaded: content.loaded, raw, dkimSelectors, sha256: createHash("sha256").update(raw).digest("hex"), bounceDomain };
}

/** Runs one attempt of a claimed delivery and returns what to record. */
export async function runDelivery(deps: DeliveryDeps, d: ClaimedDelivery, workerId: string, prepared = prepareMessage(deps, d)): Promise<Completion> {
  const now = deps.now ?? (() => new Date());
  const accepted = strictestLayer([
    { policy: deps.settings.serverPolicy, source: "server" as const },
    { policy: d.tlsPolicy, source: d.tlsPolicySource },
  ]);
  const results = new RecipientResults(d, accepted.policy, now);
  const content = await prepared;
  let hold: Hold | null = null;
  if ("loaded" in content) hold = await deliverToHosts(deps, d, accepted, content, results, now);
  else if (content.notSent) results.decideAll(content.notSent.verdict, content.notSent.failed);
  const retryAt = settleDeferrals(deps.settings, d, results.list(), now, hold);
  const message = "loaded" in content ? messageStatusIfWhole(d, content.loaded, results) : undefined;
  return { delivery: d, workerId, results: results.list(), retryAt, ...(message ? { message } : {}) };
}

/** Each recipient's result in this attempt: deferred with no evidence until something decides it. */
class RecipientResults {
  readonly #byId: Map<bigint, RecipientResult>;
  readonly #policy: TlsPolicy;
  readonly #now: () => Date;

  constructor(d: ClaimedDelivery, policy: TlsPolicy, now: () => Date) {
    this.#byId = new Map(d.recipients.map((r) => [r.id, { recipientId: r.id, status: "deferred", replyCode: null, enhancedCode: null, replyText: null, attempts: [] }]));
    this.#policy = policy;
    this.#now = now;
  }

  statusOf(id: bigint): RecipientResult["status"] | undefined {
    return this.#byId.get(id)?.status;
  }

  list(): RecipientResult[] {
    return [...this.#byId.values()];
  }

  /** One host's verdict on one recipient, with the evidence of the session it came from. */
  record(rid: bigint, evidence: AttemptEvidence, o: ReplyVerdict): void {
    const r = this.#byId.get(rid)!;
    r.status = o.outcome;
    r.replyCode = o.replyCode;
    r.enhancedCode = o.enhancedCode;
    r.replyText = o.replyText;
    r.attempts.push({ evidence, ...o });
  }

  /**
   * The same verdict for every recipient, decided here: no SMTP peer, no TLS behind it.
   * `failed`: the recipients' status is final at once, whatever the verdict.
   */
  decideAll(verdict: ReplyVerdict, failed = false, startedAt = this.#now(), policy?: Pick<AttemptEvidence, "policy" | "policySource" | "policyDetail">): void {
    const evidence: AttemptEvidence = {
      ...cleartextEvidence(null), mxHost: null, ip: null, port: null, policy: this.#policy, startedAt, durationMs: Date.now() - startedAt.getTime(), ...policy,
    };
    for (const id of this.#byId.keys()) this.record(id, evidence, verdict);
    if (failed) for (const r of this.#byId.values()) r.status = "failed";
  }
}

/** Why nothing is sent to anyone in this attempt: every recipient's verdict. */
interface NotSent {
  verdict: ReplyVerdict;
  /** The recipients fail at once (no retry can help). */
  failed: boolean;
}

/**
 * The decrypted message to send, or why there is none: `notSent` null when the delivery
 * has no recipient left (nothing to load, nothing to decide).
 */
function loadContent(deps: DeliveryDeps, d: ClaimedDelivery): { loaded: LoadedMessage } | { notSent: NotSent | null } {
  if (d.recipients.length === 0) return { notSent: null };
  let loaded: LoadedMessage | null;
  try {
    loaded = loadMessage(deps, d.message);
  } catch (err) {
    if (!(err instanceof ContentDecryptError)) throw err;
    return { notSent: unreadable(err) };
  }
  if (!loaded) return { notSent: { verdict: localVerdict("bounced", "5.3.0", "message content was purged before delivery"), failed: false } };
  return { loaded };
}

function unreadable(err: ContentDecryptError): NotSent {
  if (err.reason === "unknown_key") {
    // Content under a key this worker was not given: it will be readable once the key is
    // deployed (a rotation that ran ahead of this process), so the delivery waits like
    // any temporary failure, and SMTP_MAX_RETRY still ends it. RFC 3463 X.3.5: the
    // system is not configured in a manner that will permit it to accept this message.
    return {
      verdict: localVerdict("deferred", "4.3.5", `not sent yet: the content is encrypted under data key ${err.keyId}, which this worker does not hold; add it to SEALPOST_DATA_KEY`),
      failed: false,
    };
  }
  // Content that fails authentication under a key we hold (its check value proved the
  // key at start) was changed or damaged in storage: no retry can make it readable, and
  // garbage is never sent. The recipients fail at once with the reason.
  return { verdict: localVerdict("bounced", "5.3.0", `not sent: ${err.message}`), failed: true };
}

interface Target {
  host: string;
  ip: string;
  port: number;
}

/**
 * A retry time set by a receiving host's throttling pause (destinations.ts): `only` when no
 * host was tried because each was paused (the retry is then the pause's end, not a backoff
 * step: nothing was attempted), otherwise the retry is at least the pause's end.
 */
interface Hold {
  until: Date;
  only: boolean;
}

/** Hosts in order until one takes the message; RFC 5321 5.1. Returns the hold a throttling host put on the retry, if any. */
async function deliverToHosts(
  deps: DeliveryDeps, d: ClaimedDelivery, accepted: DomainPolicy["accepted"], { loaded, raw, dkimSelectors, sha256, bounceDomain }: ReadyMessage, results: RecipientResults, now: () => Date,
): Promise<Hold | null> {
  const startedAt = now();
  const layers = deps.layers ?? { rules: async () => [] };
  const [found, dp] = await Promise.all([
    targetsFor(deps, d.domain),
    domainPolicy(layers, d.domain, accepted, { viaRelay: deps.settings.relay !== null, relaxed: tlsRequiredNo(loaded.content.headers) }),
  ]);
  if ("verdict" in found) return results.decideAll(found.verdict, false, startedAt), null;
  if (found.targets.length === 0) return results.decideAll(localVerdict("deferred", "4.4.4", `no address to deliver to for ${d.domain}`), false, startedAt), null;
  // The policy map and MTA-STS may rule hosts out: they are never connected to.
  const plans = await planHosts(dp, found.targets.map((t) => t.host));
  const targets = found.targets.flatMap((t) => {
    const plan = plans.get(t.host)!;
    return plan.tried ? [{ ...t, plan }] : [];
  });
  if (targets.length === 0) {
    const ruledOut = [...plans.values()].flatMap((p) => (p.tried ? [] : [p]));
    // The source is the layer that ruled the first host out (all hosts, when DANE only deferred them).
    const source = ruledOut.every((p) => p.by === "dane") ? "dane" : ruledOut.find((p) => p.by !== "dane")!.by;
    const why = `not sent: no MX host may be tried: ${ruledOut.map((p) => p.why).join("; ")}`;
    results.decideAll(localVerdict("deferred", "4.7.5", why), false, startedAt, { policy: "required", policySource: source, policyDetail: ruledOutDetail(dp, ruledOut) });
    return null;
  }
  const gate = deps.destinations;
  const pausedUntil = (host: string) => gate?.pausedUntil(host) ?? null;
  // Hosts that throttled us are not tried until their pause ends (the backup MX still is).
  const allPaused = (): Hold => {
    const ends = targets.flatMap((t) => pausedUntil(t.host) ?? []);
    const until = new Date(ends.length > 0 ? Math.min(...ends) : now().getTime() + deps.settings.retryMinMs);
    const hosts = [...new Set(targets.map((t) => t.host))].join(", ");
    results.decideAll(localVerdict("deferred", "4.7.0", `not tried: ${hosts} asked this sender to slow down; the next attempt is after its pause, at ${until.toISOString()}`), false, startedAt);
    return { until, only: true };
  };
  const open = targets.filter((t) => pausedUntil(t.host) === null);
  if (open.length === 0) return allPaused();
  // One transaction for every recipient; with a bounce domain, one per recipient, each with
  // its own MAIL FROM, one after another over the same session.
  const senders = deps.envelopeSenders;
  const transactions = (rs: ClaimedDelivery["recipients"]) =>
    bounceDomain && senders ? rs.map((r) => ({ from: senders.address(r.id, bounceDomain), to: [r] })) : [{ from: loaded.fromAddress, to: rs }];
  let remaining = d.recipients;
  let hold: Hold | null = null;
  let attempted = false;
  for (const { plan, ...target } of open.slice(0, deps.settings.maxHostsPerAttempt)) {
    let nextHost = false;
    const limits = gate?.limits(d.domain, target.host);
    const release = gate && limits ? await gate.acquire(target.host, limits.sessions) : null;
    try {
      // It may have throttled another delivery while this one waited for a session to it.
      if (pausedUntil(target.host) !== null) {
        nextHost = true;
        continue;
      }
      attempted = true;
      for (const tx of transactions(remaining)) {
        // RFC 8689: a message that must travel over verified TLS asks every later hop for it too, unless it says TLS-Required: No.
        const envelope = { from: tx.from, to: tx.to.map((r) => r.address), requireTls: accepted.policy === "required" && !dp.relaxed };
        const result = await deps.attempt({
          ...attemptOptions(deps.settings, plan.policy, target, envelope, raw),
          ...(plan.peerCheck ? { peerCheck: plan.peerCheck } : {}),
          ...(limits ? { sessionMessageLimit: limits.messagesPerSession } : {}),
        });
        const evidence = { ...result.evidence, dkimSelectors, messageSha256: sha256, policySource: plan.source, policyDetail: { ...finishDetail(plan.detail, result.evidence), requiretls: result.requireTlsSent === true } };
        tx.to.forEach((r, i) => results.record(r.id, evidence, result.recipients[i]!));
        if (gate && limits) gate.observe(target.host, limits.sessions, result.recipients);
        // The next MX only when this one could not take the message at all; never after
        // a 5xx to RCPT/DATA or once the data was handed over.
        nextHost = result.tryNextHost;
        if (nextHost) break;
      }
    } finally {
      release?.();
    }
    const paused = pausedUntil(target.host);
    if (paused !== null) hold = { until: new Date(paused), only: false };
    if (!nextHost) break;
    remaining = remaining.filter((r) => results.statusOf(r.id) === "deferred");
    if (remaining.length === 0) break;
  }
  return attempted ? hold : allPaused();
}

function attemptOptions(settings: DeliverySettings, policy: TlsPolicy, target: Target, envelope: AttemptOptions["envelope"], message: Buffer): AttemptOptions {
  return {
    target,
    policy,
    ...(settings.relay?.implicitTls ? { implicitTls: true } : {}),
    ...(settings.relay?.auth ? { auth: settings.relay.auth } : {}),
    heloName: settings.heloName,
    ca: settings.ca,
    connectTimeoutMs: settings.connectTimeoutMs,
    envelope,
    message,
  };
}

/** `TLS-Required: No` among the message's headers (RFC 8689 section 5): the recipient's published policies are not applied. */
function tlsRequiredNo(headers: Record<string, string>): boolean {
  return Object.entries(headers).some(([k, v]) => k.toLowerCase() === "tls-required" && v.trim().toLowerCase() === "no");
}

/** The relay's addresses, or the domain's MX hosts' addresses in order; or the verdict when there are none to be had. */
async function targetsFor(deps: DeliveryDeps, domain: string): Promise<{ targets: Target[] } | { verdict: ReplyVerdict }> {
  const relay = deps.settings.relay;
  if (relay) {
    try {
      const ips = isIP(relay.host) ? [relay.host] : (await lookup(relay.host, { all: true })).map((a) => a.address);
      return { targets: ips.map((ip) => ({ host: relay.host, ip, port: relay.port })) };
    } catch (err) {
      return { verdict: localVerdict("deferred", "4.4.3", `relay host ${relay.host} did not resolve (${(err as { code?: string }).code ?? "error"})`) };
    }
  }
  const r = await deps.resolveMx(domain);
  if (r.kind === "bounce") return { verdict: localVerdict("bounced", r.enhancedCode, r.reason) };
  if (r.kind === "defer") return { verdict: localVerdict("deferred", r.enhancedCode, r.reason) };
  return { targets: r.hosts.flatMap((h) => h.addresses.map((ip) => ({ host: h.host, ip, port: deps.settings.mxPort }))) };
}

/**
 * SMTP_MAX_RETRY (Postfix maximal_queue_lifetime): past it, a deferral is final. Returns
 * when to try the recipients still deferred, or null when none is.
 */
function settleDeferrals(settings: DeliverySettings, d: ClaimedDelivery, results: RecipientResult[], now: () => Date, hold: Hold | null): Date | null {
  const expired = isPastLifetime(d.createdAt, settings.maxRetryMs, now());
  let anyDeferred = false;
  for (const r of results) {
    if (r.status !== "deferred") continue;
    if (expired) {
      r.status = "failed";
      r.replyText = `gave up after ${d.attempt} attempts: ${r.replyText ?? "deferred"}`;
    } else anyDeferred = true;
  }
  if (!anyDeferred) return null;
  if (hold?.only) return hold.until;
  const backoff = now().getTime() + nextRetryDelay(d.attempt, settings.retryMinMs, settings.retryMaxMs);
  return new Date(Math.max(backoff, hold?.until.getTime() ?? 0));
}

/**
 * When this delivery holds every recipient of the message (one recipient domain, the
 * usual case), nobody else can change their statuses while we hold the lease, so the
 * message status is known here and the result is recorded in a single statement.
 */
function messageStatusIfWhole(d: ClaimedDelivery, loaded: LoadedMessage, results: RecipientResults): Completion["message"] {
  if (!loaded.allRecipients.every((r) => r.delivery_id === String(d.id))) return undefined;
  const statuses = loaded.allRecipients.map((r) => results.statusOf(BigInt(r.id)) ?? r.status);
  return { status: deriveMessageStatus(statuses), final: statuses.every((x) => FINAL_RECIPIENT_STATUSES.has(x)) };
}
