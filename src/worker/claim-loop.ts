// The claim loop (ARCHITECTURE.md, "Leases and fences"): claims due deliveries in batches,
// runs up to WORKER_CONCURRENCY of them at once, renews the leases it holds, records each
// result under its lease fence (results finishing together share a statement,
// result-writer.ts; retried through a database outage), and polls again.
// stop() stops claiming, lets in-flight deliveries finish and their results be written for
// a grace period, then hands back the leases it still holds.
//
// A loop goes created → running (start()) → stopping (stop()) → stopped, once.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { claimDeliveries, releaseLeases, renewLeases, returnUnstarted, type ClaimedDelivery, type Completion } from "../db/deliveries.ts";
import { prepareMessage, runDelivery, type DeliveryDeps, type PreparedMessage } from "./deliver.ts";
import { isStatementRejected, ResultWriter } from "./result-writer.ts";
import { errorFields } from "../logger.ts";
import { countDelivery, observeAttempt, tlsLabel } from "../metrics.ts";

// A result write is retried from RECORD_RETRY_MIN_MS, doubling up to RECORD_RETRY_MAX_MS,
// for as long as it takes (until shutdown): the SMTP work is done, and a result that is
// never written means the message is sent again. A statement the database rejects for
// what it is (below) cannot succeed by waiting, so it is tried only a few times.
const RECORD_RETRY_MIN_MS = 200;
const RECORD_RETRY_MAX_MS = 2_000;
const REJECTED_STATEMENT_TRIES = 5;

export interface WorkerHandle {
  readonly id: string;
  /** Resolves when the worker has no delivery in flight and nothing is due right now. */
  idle(): Promise<void>;
  /** When the claim loop last went round (epoch ms): at least once a minute while it runs. */
  lastLoopAt(): number;
  stop(graceMs?: number): Promise<void>;
}

export interface WorkerOptions {
  concurrency: number;
  batchSize: number;
  /** Lease of a delivery whose SMTP work has started (WORKER_LEASE_MS). */
  leaseMs: number;
  /** Lease of a delivery claimed but not started yet (WORKER_CLAIM_LEASE_MS). */
  claimLeaseMs: number;
  /** Every lease the worker holds is renewed this often (WORKER_LEASE_RENEW_MS). */
  renewMs: number;
  pollMs: number;
  id?: string;
}

/** A delivery this worker holds a lease on, and what it is doing with it. */
interface Held {
  delivery: ClaimedDelivery;
  /** waiting: claimed, in the backlog; sending: SMTP work started; recording: writing the result. */
  phase: "waiting" | "sending" | "recording";
  /**
   * performance.now() by which the row's lease surely still holds: when the statement that
   * set it was sent, plus the lease it set. The database's now() was later, so the lease
   * it stored runs out later still.
   */
  leaseUntil: number;
  /** Its message, being built ahead of its start (deliver.ts prepareMessage); null until then. */
  prepared: Promise<PreparedMessage> | null;
}

export type ClaimLoopState = "created" | "running" | "stopping" | "stopped";

export class ClaimLoop implements WorkerHandle {
  readonly id: string;
  readonly #deps: DeliveryDeps;
  readonly #opts: WorkerOptions;
  readonly #log: Logger;
  readonly #writer: ResultWriter;
  #state: ClaimLoopState = "created";

  /** Every delivery this worker holds a lease on. */
  readonly #held = new Map<bigint, Held>();
  // Claimed but not yet started: one claim statement serves many deliveries, and a
  // freed slot starts the next delivery at once instead of waiting for a claim round
  // trip. Up to four rounds of work (WORKER_BATCH_SIZE at most), topped up when half is
  // left, so the claim's round trip never leaves a slot without work; under the short
  // claim lease, so a worker that dies leaves these rows waiting seconds, not a lease.
  readonly #backlog: ClaimedDelivery[] = [];
  readonly #backlogTarget: number;
  /** Every delivery under way, sending or recording its result. */
  readonly #inFlight = new Set<Promise<void>>();
  // A slot is taken while a delivery talks SMTP and freed when the peer has answered: the
  // result is recorded after that (group commit, result-writer.ts) while the slot already
  // carries the next message, so a slot never idles through a commit. Results waiting to
  // be written are bounded, so a database slower than the SMTP side slows the claiming.
  #sending = 0;
  #recording = 0;
  /** Starts under way (startFromBacklog): stop() waits for them before handing the backlog back. */
  readonly #starts = new Set<Promise<boolean>>();
  readonly #maxRecording: number;
  /** Deliveries whose result write has failed and is being retried. */
  #unrecorded = 0;
  /** Set by stop(): result writes are retried until then. */
  #stopDeadline: number | null = null;

  /** Cuts the loop's current wait short (a slot freed up, stop()). */
  #wake: (() => void) | null = null;
  #idleWaiters: Array<() => void> = [];
  /** Pauses of result-write retries; cut short when the database answers again or stop() starts. */
  readonly #pauses = new Set<() => void>();
  #unreachableSince: number | null = null;

  #heartbeat: NodeJS.Timeout | null = null;
  #renewing = false;
  #lastLoopAt = Date.now();
  #running: Promise<void> = Promise.resolve();
  #stopped: Promise<void> | null = null;

  constructor(deps: DeliveryDeps, opts: WorkerOptions, logger: Logger) {
    this.id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.#deps = deps;
    this.#opts = opts;
    this.#log = logger.child({ component: "worker", worker: this.id });
    this.#writer = new ResultWriter(deps.pool);
    this.#backlogTarget = Math.max(opts.concurrency, Math.min(opts.batchSize, 4 * opts.concurrency));
    this.#maxRecording = 4 * opts.concurrency;
  }

  get state(): ClaimLoopState {
    return this.#state;
  }

  /** Starts claiming, and the heartbeat that renews every lease held. */
  start(): this {
    if (this.#state !== "created") throw new Error(`a claim loop starts once (it is ${this.#state})`);
    this.#state = "running";
    this.#heartbeat = setInterval(() => void this.#renewAll(), this.#opts.renewMs);
    this.#heartbeat.unref();
    this.#running = this.#loop();
    return this;
  }

  idle(): Promise<void> {
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  lastLoopAt(): number {
    return this.#lastLoopAt;
  }

  /** Stops once; a later call waits for the same stop (its grace is the first call's). */
  stop(graceMs = 25_000): Promise<void> {
    if (this.#state === "created") this.#state = "stopped";
    this.#stopped ??= this.#state === "stopped" ? Promise.resolve() : this.#stop(graceMs);
    return this.#stopped;
  }

  async #stop(graceMs: number): Promise<void> {
    this.#state = "stopping";
    const deadline = Date.now() + graceMs;
    this.#stopDeadline = deadline;
    this.#wake?.();
    this.#resumeRetries(); // retry now, then within the grace period
    await this.#running;
    await Promise.all(this.#starts);
    await this.#handBackBacklog();
    const timedOut = await this.#settleInFlight(deadline);
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    if (timedOut) await this.#releaseHeld();
    this.#idleWaiters.forEach((w) => w());
    this.#state = "stopped";
    this.#log.info({}, "worker stopped");
  }

  // ---- the loop --------------------------------------------------------------------

  async #loop(): Promise<void> {
    const opts = this.#opts;
    while (this.#state === "running") {
      this.#lastLoopAt = Date.now();
      // While a result waits for the database, nothing new is claimed: once the database
      // is back, this worker's results are written before it takes more work.
      // Slots freed since the last round start from the backlog before the claim round
      // trip, not after it; the claim then tops the backlog up, and what it took to start
      // at once starts right after.
      let failed = !(await this.#startFree());
      const claim = this.#unrecorded === 0 && this.#backlog.length < this.#backlogTarget / 2 ? await this.#claim() : { claimed: 0, failed: false };
      if (claim.failed || !(await this.#startFree())) failed = true;
      const free = this.#freeSlots();
      const nothingToDo = claim.claimed === 0 && this.#backlog.length === 0;
      if (nothingToDo && this.#inFlight.size === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        waiters.forEach((w) => w());
      }
      if (this.#state !== "running") break;
      // Wait for the poll interval, or until a slot frees up.
      if (nothingToDo || failed) await this.#wait(opts.pollMs);
      else if (free <= 0) await this.#wait(60_000);
    }
  }

  #freeSlots(): number {
    return this.#recording < this.#maxRecording ? this.#opts.concurrency - this.#sending : 0;
  }

  /**
   * Starts deliveries from the backlog in the free slots; false when the database did not
   * answer. Called by the loop and by a delivery as it frees its slot, so a slot is refilled
   * at once even while the loop waits for a claim.
   */
  #startFree(): Promise<boolean> {
    const free = this.#freeSlots();
    if (this.#state !== "running" || free <= 0 || this.#backlog.length === 0) return Promise.resolve(true);
    const p = this.#startFromBacklog(free).finally(() => this.#starts.delete(p));
    this.#starts.add(p);
    return p;
  }

  /**
   * Builds the messages next in line (as many as there are slots) while the slots are busy,
   * so a freed slot finds its message ready. Only so many: a backlog of large messages is
   * not held in memory built.
   */
  #prepareAhead(): void {
    for (const d of this.#backlog.slice(0, this.#opts.concurrency)) {
      const h = this.#held.get(d.id);
      if (!h || h.prepared) continue;
      h.prepared = prepareMessage(this.#deps, d);
      h.prepared.catch(() => {}); // a failure is reported by the delivery that awaits it; a dropped one never is
    }
  }

  /** Claims up to the backlog's target, under the short claim lease. */
  async #claim(): Promise<{ claimed: number; failed: boolean }> {
    try {
      // The rows the loop starts right after this claim (slots free beyond the backlog,
      // which goes first) take the full lease in the claim itself.
      const startNow = Math.max(0, this.#opts.concurrency - this.#sending - this.#backlog.length);
      const leases = { claimLeaseMs: this.#opts.claimLeaseMs, leaseMs: this.#opts.leaseMs, startNow };
      const sentAt = performance.now();
      const got = await claimDeliveries(this.#deps.pool, this.id, this.#backlogTarget - this.#backlog.length, leases, this.#held.keys());
      for (const d of got) this.#held.set(d.id, { delivery: d, phase: "waiting", leaseUntil: sentAt + (d.started ? leases.leaseMs : leases.claimLeaseMs), prepared: null });
      // A "high" row (a password reset) also goes ahead of the normal rows already waiting
      // here, not only in the claim's order: at most one claim's worth of rows overtake.
      const firstNormal = this.#backlog.findIndex((d) => !d.highPriority);
      this.#backlog.splice(firstNormal < 0 ? this.#backlog.length : firstNormal, 0, ...got.filter((d) => d.highPriority));
      this.#backlog.push(...got.filter((d) => !d.highPriority));
      this.#prepareAhead();
      this.#databaseAnswered();
      return { claimed: got.length, failed: false };
    } catch (err) {
      this.#databaseFailed();
      this.#log.warn({ err: errorFields(err) }, "claiming failed; retrying after the poll interval");
      return { claimed: 0, failed: true };
    }
  }

  #wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  /**
   * Starts up to `free` deliveries from the backlog. Those claimed under the claim lease
   * get the full delivery lease first, in one statement (those the claim gave it to just
   * now need none); a row that is no longer ours (its claim lease ran out and another
   * worker took it) is dropped, and none is started while the database does not answer.
   * Returns false when that statement failed.
   */
  async #startFromBacklog(free: number): Promise<boolean> {
    const batch = this.#backlog.splice(0, free);
    this.#sending += batch.length; // the slots are taken now, while the lease statement runs
    this.#prepareAhead();
    let ours: Set<bigint>;
    let toExtend: ClaimedDelivery[] = [];
    let renewSentAt = 0;
    try {
      // A row whose lease surely holds for two more heartbeats starts as it is: the next
      // heartbeat gives it the full lease (it renews rows under way with WORKER_LEASE_MS),
      // so a statement per start is spent only on rows whose claim lease is running short.
      const now = performance.now();
      const holding = batch.filter((d) => d.started || (this.#held.get(d.id)?.leaseUntil ?? 0) - now >= 2 * this.#opts.renewMs);
      toExtend = batch.filter((d) => !holding.includes(d));
      renewSentAt = now;
      ours = await renewLeases(this.#deps.pool, this.id, toExtend.map((delivery) => ({ delivery, leaseMs: this.#opts.leaseMs })));
      for (const d of holding) ours.add(d.id);
    } catch (err) {
      // Back to the backlog, each to be fenced when it starts: how long the database stays
      // away, and so whether a lease from the claim still holds by then, is unknown.
      for (const d of batch) d.started = false;
      this.#backlog.unshift(...batch);
      this.#sending -= batch.length;
      this.#databaseFailed();
      this.#log.warn({ err: errorFields(err) }, "starting deliveries failed; retrying after the poll interval");
      return false;
    }
    this.#databaseAnswered();
    for (const d of batch) {
      if (!ours.has(d.id)) {
        this.#sending--;
        this.#held.delete(d.id);
        this.#log.warn({ delivery: String(d.id), attempt: d.attempt }, "a claimed delivery was taken over before it started; dropped");
      } else if (this.#state !== "running") {
        this.#sending--;
        this.#backlog.push(d); // handed back by stop()
      } else this.#startDelivery(d, toExtend.includes(d) ? renewSentAt + this.#opts.leaseMs : (this.#held.get(d.id)?.leaseUntil ?? 0));
    }
    return true;
  }

  #startDelivery(d: ClaimedDelivery, leaseUntil: number): void {
    const prepared = this.#held.get(d.id)?.prepared ?? prepareMessage(this.#deps, d);
    const h: Held = { delivery: d, phase: "sending", leaseUntil, prepared };
    this.#held.set(d.id, h);
    const p = this.#deliverAndRecord(h, prepared).finally(() => {
      this.#inFlight.delete(p);
      if (h.phase === "sending") this.#sending--;
      else this.#recording--;
      this.#wake?.();
    });
    this.#inFlight.add(p);
  }

  // ---- one delivery ----------------------------------------------------------------

  async #deliverAndRecord(h: Held, prepared: Promise<PreparedMessage>): Promise<void> {
    const d = h.delivery;
    const log = this.#log;
    try {
      const completion = await runDelivery(this.#deps, d, this.id, prepared);
      h.phase = "recording";
      this.#sending--;
      this.#recording++;
      void this.#startFree();
      this.#wake?.();
      const written = await this.#record(completion);
      const summary = completion.results.map((r) => r.status);
      if (written === true) {
        for (const r of completion.results) {
          countDelivery(r.status, tlsLabel(r.attempts[r.attempts.length - 1]?.evidence));
          for (const a of r.attempts) observeAttempt(a.evidence.durationMs);
        }
        log.info({ delivery: String(d.id), message: d.messageId, domain: d.domain, attempt: d.attempt, outcomes: summary }, "delivery attempt recorded");
      }
      else if (written === false) log.warn({ delivery: String(d.id), attempt: d.attempt }, "lease lost before the result was recorded; the newer attempt wins");
      else {
        log.error(
          { delivery: String(d.id), message: d.messageId, domain: d.domain, attempt: d.attempt, outcomes: summary },
          "stopped before this delivery's result could be recorded (database unavailable); it will be attempted again when its lease runs out",
        );
      }
    } catch (err) {
      // Leave the row leased (and no longer renewed): it becomes due again when the lease expires.
      log.error({ delivery: String(d.id), err: errorFields(err) }, "delivery attempt failed");
    } finally {
      if (this.#held.get(d.id) === h) this.#held.delete(d.id);
    }
  }

  /**
   * Writes the result, retrying until it is written, refused by the fence (false), or
   * stop()'s grace period is over ("unrecorded"). A fenced write is idempotent: a retry
   * after a commit whose reply was lost finds the lease gone and returns false. Meanwhile
   * the heartbeat keeps the row's lease alive, so nobody else claims it.
   */
  async #record(c: Completion): Promise<boolean | "unrecorded"> {
    let tries = 0;
    let delay = RECORD_RETRY_MIN_MS;
    const started = Date.now();
    const fields = () => ({ delivery: String(c.delivery.id), message: c.delivery.messageId, attempt: c.delivery.attempt, tries, waitedMs: Date.now() - started });
    const pastDeadline = () => this.#stopDeadline !== null && Date.now() >= this.#stopDeadline;
    try {
      for (;;) {
        try {
          const ok = await this.#writer.write(c);
          if (tries > 0) this.#log.info(fields(), "delivery result recorded after the database came back");
          return ok;
        } catch (err) {
          tries++;
          if (tries === 1) this.#unrecorded++;
          const rejected = isStatementRejected(err);
          if (!rejected) this.#databaseFailed();
          if (rejected && tries >= REJECTED_STATEMENT_TRIES) throw err;
          if (pastDeadline()) return "unrecorded";
          // Logged on the 1st, 2nd, 4th, 8th ... failure: an outage is visible without flooding the log.
          if ((tries & (tries - 1)) === 0) this.#log.warn({ ...fields(), err: errorFields(err) }, "recording a delivery result failed; retrying until the database answers");
          await this.#pause(this.#stopDeadline === null ? delay : Math.min(delay, this.#stopDeadline - Date.now()));
          if (pastDeadline()) return "unrecorded";
          delay = Math.min(delay * 2, RECORD_RETRY_MAX_MS);
        }
      }
    } finally {
      if (tries > 0) this.#unrecorded--;
    }
  }

  #pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#pauses.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#pauses.add(done);
    });
  }

  #resumeRetries(): void {
    [...this.#pauses].forEach((p) => p());
  }

  #databaseAnswered(): void {
    if (this.#unreachableSince !== null) {
      this.#log.info({ unreachableMs: Date.now() - this.#unreachableSince }, "the database answers again");
      this.#unreachableSince = null;
    }
    this.#resumeRetries();
  }

  #databaseFailed(): void {
    this.#unreachableSince ??= Date.now();
  }

  // ---- the heartbeat ---------------------------------------------------------------

  /**
   * One statement renews every lease this worker holds, the full lease for deliveries
   * under way (a peer slower than the lease; a result waiting for the database), the
   * claim lease for the backlog.
   */
  async #renewAll(): Promise<void> {
    if (this.#renewing || this.#held.size === 0) return;
    this.#renewing = true;
    const snapshot = [...this.#held.values()].map((h) => ({ h, phase: h.phase }));
    const { leaseMs, claimLeaseMs } = this.#opts;
    try {
      const sentAt = performance.now();
      const ours = await renewLeases(this.#deps.pool, this.id, snapshot.map(({ h, phase }) => ({ delivery: h.delivery, leaseMs: phase === "waiting" ? claimLeaseMs : leaseMs })));
      this.#databaseAnswered();
      for (const { h, phase } of snapshot) {
        // A row written since the snapshot is simply gone; only a row in the same phase
        // as when the renewal was sent is known lost.
        if (ours.has(h.delivery.id)) {
          h.leaseUntil = Math.max(h.leaseUntil, sentAt + (phase === "waiting" ? claimLeaseMs : leaseMs));
          continue;
        }
        if (this.#held.get(h.delivery.id) !== h || h.phase !== phase) continue;
        if (phase === "waiting") {
          const i = this.#backlog.indexOf(h.delivery);
          if (i >= 0) this.#backlog.splice(i, 1);
          this.#held.delete(h.delivery.id);
          this.#log.warn({ delivery: String(h.delivery.id), attempt: h.delivery.attempt }, "a claimed delivery was taken over before it started; dropped");
        } else if (phase === "sending") {
          this.#held.delete(h.delivery.id);
          this.#log.warn({ delivery: String(h.delivery.id), attempt: h.delivery.attempt }, "lease lost while the delivery is under way; its result will be refused");
        }
      }
    } catch (err) {
      if (this.#unreachableSince === null) this.#log.warn({ held: snapshot.length, err: errorFields(err) }, "renewing leases failed; retrying at the next renewal");
      this.#databaseFailed();
    } finally {
      this.#renewing = false;
    }
  }

  // ---- stopping --------------------------------------------------------------------

  /** Deliveries claimed but never started go back to the queue at once. */
  async #handBackBacklog(): Promise<void> {
    const notStarted = this.#backlog.splice(0);
    for (const d of notStarted) this.#held.delete(d.id);
    await returnUnstarted(this.#deps.pool, this.id, notStarted).catch((err: unknown) => {
      this.#log.warn({ deliveries: notStarted.length, err: errorFields(err) }, "could not hand back deliveries claimed but not started; they are due again when their claim lease runs out");
    });
  }

  /** Waits for the deliveries in flight until the deadline; true when some are still running. */
  async #settleInFlight(deadline: number): Promise<boolean> {
    const all = Promise.allSettled([...this.#inFlight]);
    // Result writes give up at the deadline itself; a moment more lets them say so.
    const remaining = Math.max(0, deadline - Date.now()) + 100;
    let grace: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (grace = setTimeout(() => r(true), remaining).unref()))]);
    clearTimeout(grace); // else it outlives the worker by the grace period
    return timedOut;
  }

  async #releaseHeld(): Promise<void> {
    const left = [...this.#held.values()];
    const byPhase = (phase: Held["phase"]) => left.filter((h) => h.phase === phase).map((h) => String(h.delivery.id));
    const n = await releaseLeases(this.#deps.pool, this.id).catch(() => null);
    this.#log.warn(
      { released: n, sending: byPhase("sending"), recording: byPhase("recording") },
      n === null
        ? "stopped with deliveries in flight; handing back their leases failed, so they are due again when their leases run out"
        : "stopped with deliveries in flight; their leases were handed back",
    );
  }
}
