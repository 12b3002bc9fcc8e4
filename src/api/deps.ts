import type { SenderDomainGate } from "../services/sender-domain-gate.ts";
import type { Logger } from "pino";
import type { Counters } from "./plugins/counters.ts";
import type { Config } from "../config.ts";
import type { DatabaseHandle } from "../db/client.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import type { ApiKeyVerifier } from "../services/api-keys.ts";
import type { TxtLookup } from "../services/sender-domains.ts";
import type { MessageWriter } from "../services/message-writer.ts";
import type { ReceiptSigner } from "../services/receipts.ts";

/** Everything the API needs, built by the caller (server.ts or a test). */
export interface AppDeps {
  config: Config;
  db: DatabaseHandle;
  cipher: ContentCipher;
  keys: ApiKeyVerifier;
  logger: Logger;
  now?: () => Date;
  /** DNS for POST /domains/:id/verify; buildApp makes one on DNS_SERVERS when not given. */
  dns: TxtLookup;
  /** Groups concurrent sends into one statement; buildApp makes one when not given. */
  writer: MessageWriter;
  /** The rate limits' counts: in memory, or shared through Redis (REDIS_URL); buildApp makes them when not given. */
  counters: Counters;
  /** Signs delivery receipts with the installation's key; buildApp makes one when not given. */
  receipts: ReceiptSigner;
  /** Refuses From domains that are not verified sender domains; buildApp makes one when SENDER_DOMAINS=verified. */
  senderDomains?: SenderDomainGate | undefined;
}
