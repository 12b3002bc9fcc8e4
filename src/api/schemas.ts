// Response and shared schemas, used by the routes and by openapi.yaml. Every object of a
// response is a strict object: registerRoute parses each 2xx body with its schema before
// sending it, and a field the contract does not name fails there like a missing one
// (openapi.yaml says additionalProperties: false of each).
import { z } from "zod";
import { MESSAGE_EVENT_TYPES } from "../domain/event.ts";
import { ERROR_CODES } from "../domain/errors.ts";
import { MESSAGE_PRIORITIES, MESSAGE_STATUSES, RECIPIENT_STATUSES } from "../domain/message.ts";
import { SUPPRESSION_REASONS } from "../domain/suppression.ts";
import { POLICY_SOURCES, TLS_POLICIES } from "../domain/tls-policy.ts";

export const ProblemSchema = z
  .strictObject({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.enum(Object.keys(ERROR_CODES) as [keyof typeof ERROR_CODES, ...Array<keyof typeof ERROR_CODES>]),
    request_id: z.string(),
    errors: z.array(z.strictObject({ path: z.string(), message: z.string() })).optional(),
  })
  .meta({ id: "Problem", description: "RFC 9457 problem details" });

export const SendResponseSchema = z
  .strictObject({
    id: z.uuid(),
    status: z.enum(["queued", "scheduled", "suppressed"]).meta({
      description: '"suppressed" when every recipient is on the sender domain\'s suppression list: the message is finished, nothing is sent, and retrying will not change that',
    }),
    tls_policy: z.enum(TLS_POLICIES),
    created_at: z.iso.datetime(),
    send_at: z.iso.datetime().optional(),
    suppressed: z.array(z.string()).optional().meta({
      description: "The recipients not sent to because the sender domain suppresses them (GET /suppressions says why); the others are sent as usual. Absent when there are none",
    }),
  })
  .meta({ id: "SendResponse" });

const MailboxView = z.strictObject({ address: z.string(), name: z.string().nullable() }).meta({ id: "Mailbox" });

const PolicyDetailSchema = z
  .strictObject({
    accepted: z.enum(POLICY_SOURCES).meta({ description: "The layer that fixed the policy when the message was accepted: server, key, message, or default" }),
    map: z
      .strictObject({
        pattern: z.string(),
        origin: z.enum(["config", "api"]).meta({ description: "SMTP_TLS_POLICY_MAP or /tls-policies" }),
        mx: z.array(z.string()),
        fingerprints: z.array(z.string()),
      })
      .nullable()
      .meta({ description: "The TLS policy map's rule for the recipient domain, if one matched" }),
    mta_sts: z
      .union([
        z.strictObject({
          state: z.literal("policy"),
          mode: z.enum(["enforce", "testing", "none"]),
          id: z.string().meta({ description: "The id of the _mta-sts TXT record the policy was fetched under" }),
          mx: z.array(z.string()),
          expires_at: z.iso.datetime(),
          mx_match: z.boolean().meta({ description: "Whether the MX host matched one of the policy's mx patterns" }),
          stale_error: z.string().optional().meta({ description: "Why the last refresh failed, while the cached policy stays in force until it expires" }),
          would_fail: z.string().optional().meta({ description: "testing mode: why enforce would have refused this attempt" }),
        }),
        z.strictObject({
          state: z.enum(["none", "off", "relay", "relaxed", "unavailable"]),
          reason: z.string(),
        }),
      ])
      .meta({ description: "The recipient domain's MTA-STS policy (RFC 8461) as applied, or why none was" }),
    dane: z
      .strictObject({
        state: z.enum(["off", "relay", "none", "relaxed", "secure", "unusable", "lookup_failed"]).meta({
          description: "secure: usable TLSA records (DANE verifies the certificate); unusable: only records unusable for SMTP (TLS required, unauthenticated); none: no DNSSEC-validated records; lookup_failed: the TLSA lookup failed (SERVFAIL, bogus, no answer), so the host was not tried",
        }),
        record: z.string().optional().meta({ description: 'The TLSA record the certificate matched, as "3 1 1 <hex>"' }),
        reason: z.string().optional(),
      })
      .meta({ description: "DANE (RFC 7672) for the MX host, or why it did not apply" }),
    mx_name_check: z.enum(["match", "mismatch"]).nullable().meta({ description: "Whether the certificate named the host connected to, whatever decided verified; null without a certificate" }),
    verified_by: z.enum(["pkix", "fingerprint", "dane"]).nullable().meta({
      description: "What decided tls.verified: pkix (a trusted CA and the host's name), fingerprint (a certificate the policy map pins) or dane (a TLSA record); null without TLS",
    }),
    matched: z.string().nullable().meta({ description: "The pinned fingerprint or TLSA record the certificate matched" }),
    tls_required_no: z.boolean().meta({ description: "The message carried TLS-Required: No (RFC 8689): MTA-STS and DANE were not applied" }),
    session: z.uuid().optional().meta({ description: "An id of the SMTP connection the attempt went over: attempts that share it went over one TLS session" }),
    requiretls: z.boolean().meta({ description: "MAIL FROM carried REQUIRETLS (RFC 8689): the message's policy was required and the server advertised it, so later hops must use verified TLS too" }),
  })
  .meta({ id: "PolicyDetail", description: "What each layer of the TLS policy said for this attempt" });

const AttemptSchema = z
  .strictObject({
    attempt: z.number().int(),
    started_at: z.iso.datetime(),
    duration_ms: z.number().int(),
    outcome: z.enum(["delivered", "deferred", "bounced"]),
    mx_host: z.string().nullable(),
    ip: z.string().nullable(),
    port: z.number().int().nullable(),
    policy: z.enum(TLS_POLICIES),
    policy_source: z.enum(POLICY_SOURCES).nullable().meta({
      description:
        "The layer that made the policy what it was: server (SMTP_TLS_POLICY), key (the API key's default), message (its tls field), " +
        "map (the operator's TLS policy map), mta-sts (the recipient domain's MTA-STS policy in enforce mode), dane, or default (opportunistic everywhere). " +
        "Null for attempts recorded before sealpost kept it",
    }),
    policy_detail: PolicyDetailSchema.nullable(),
    tls: z.strictObject({
      used: z.boolean(),
      version: z.string().nullable(),
      cipher: z.string().nullable(),
      verified: z.boolean().nullable(),
      verify_error: z.string().nullable(),
      certificate: z
        .strictObject({
          subject: z.string().nullable(),
          issuer: z.string().nullable(),
          not_after: z.iso.datetime().nullable(),
          fingerprint_sha256: z.string().nullable(),
        })
        .nullable(),
    }),
    dkim: z
      .strictObject({ selectors: z.array(z.string()).describe("Selectors of the DKIM signatures on the bytes sent; empty when the message went out unsigned") })
      .describe("How the bytes sent were signed"),
    smtp: z.strictObject({ code: z.number().int().nullable(), enhanced_code: z.string().nullable(), text: z.string().nullable() }),
  })
  .meta({ id: "DeliveryAttempt", description: "Evidence of one SMTP attempt for one recipient" });

const RecipientSchema = z
  .strictObject({
    address: z.string(),
    name: z.string().nullable(),
    kind: z.enum(["to", "cc", "bcc"]),
    status: z.enum(RECIPIENT_STATUSES),
    attempts: z.number().int(),
    last_response: z
      .strictObject({ code: z.number().int().nullable(), enhanced_code: z.string().nullable(), text: z.string().nullable() })
      .nullable(),
    next_attempt_at: z.iso.datetime().nullable().meta({
      description:
        "When the next delivery attempt is due, for a queued, scheduled or deferred recipient (it may be in the past when workers are busy); " +
        "null while an attempt is under way and once the recipient is final.",
    }),
    expires_at: z.iso.datetime().nullable().meta({
      description:
        "When retrying ends: SMTP_MAX_RETRY after the message first became due (accepted, or send_at). " +
        "The first attempt at or after this time that is deferred fails the recipient with the last reason. Null once the recipient is final.",
    }),
    delivery_attempts: z.array(AttemptSchema),
  })
  .meta({ id: "Recipient" });

export const MessageSummarySchema = z
  .strictObject({
    id: z.uuid(),
    status: z.enum(MESSAGE_STATUSES),
    tls_policy: z.enum(TLS_POLICIES),
    priority: z.enum(MESSAGE_PRIORITIES),
    from: MailboxView,
    subject: z.string().nullable(),
    tags: z.array(z.string()),
    metadata: z.record(z.string(), z.string()).nullable(),
    created_at: z.iso.datetime(),
    send_at: z.iso.datetime().nullable(),
    content_purged: z.boolean(),
    content_unreadable: z
      .strictObject({
        reason: z.enum(["unknown_data_key", "failed_authentication"]),
        data_key_id: z.string().nullable().meta({ description: "The data key id the stored content names" }),
        detail: z.string(),
      })
      .nullable()
      .meta({
        description:
          "Set when this server cannot decrypt the stored content (then `subject` is null): it is under a data key the server does not hold " +
          "(`unknown_data_key`: the operator adds that key to SEALPOST_DATA_KEY), or it was changed in storage (`failed_authentication`). " +
          "Null when the content was read or has been purged.",
      }),
  })
  .meta({ id: "MessageSummary" });

export const MessageSchema = MessageSummarySchema.extend({
  message_id: z.string().meta({ description: "The RFC 5322 Message-ID header, stable across retries" }),
  reply_to: z.array(MailboxView),
  updated_at: z.iso.datetime(),
  recipients: z.array(RecipientSchema),
}).meta({ id: "Message" });

export const MessageListSchema = z
  .strictObject({ data: z.array(MessageSummarySchema), next_cursor: z.string().nullable() })
  .meta({ id: "MessageList" });

export const IdParams = z.strictObject({ id: z.uuid({ message: "id must be a message id (UUID)" }) });

export const EventsSchema = z
  .strictObject({
    message_id: z.uuid(),
    events: z.array(AttemptSchema.extend({ recipient: z.string() })),
  })
  .meta({ id: "MessageEvents" });

const MessageEventSchema = z
  .strictObject({
    id: z.string().describe("Stable id of the event, also its `webhook-id`, e.g. evt_1042"),
    type: z.enum(MESSAGE_EVENT_TYPES),
    created_at: z.iso.datetime(),
    data: z.strictObject({
      message_id: z.uuid(),
      recipient: z.strictObject({ address: z.string(), kind: z.enum(["to", "cc", "bcc"]) }),
      tags: z.array(z.string()),
      metadata: z.record(z.string(), z.string()).nullable(),
      smtp: z
        .strictObject({ code: z.number().int().nullable(), enhanced_code: z.string().nullable(), text: z.string().nullable() })
        .nullable()
        .describe("The reply or reason behind a delivered, deferred, bounced or failed event; null for the others"),
      next_attempt_at: z.iso.datetime().nullable().describe("message.deferred: when the next attempt is due"),
      attempt: AttemptSchema.nullable().describe("The SMTP attempt behind the event, with its TLS evidence; null when none was made (a DNS failure, a cancel)"),
    }),
  })
  .meta({ id: "MessageEvent", description: "A change of one recipient's status" });

const WebhookDisabledEventSchema = z
  .strictObject({
    id: z.string(),
    type: z.literal("webhook.disabled"),
    created_at: z.iso.datetime(),
    data: z.strictObject({ endpoint_id: z.uuid(), reason: z.string() }),
  })
  .meta({ id: "WebhookDisabledEvent", description: "A webhook endpoint was disabled: it answered 410 Gone, or every attempt failed for five days" });

export const EventSchema = z.discriminatedUnion("type", [MessageEventSchema, WebhookDisabledEventSchema]).meta({ id: "Event" });

/** A webhook's body: the event without its id (that is the webhook-id header); `webhook.test` for a test. */
export const WebhookPayloadSchema = z
  .union([
    MessageEventSchema.omit({ id: true }),
    WebhookDisabledEventSchema.omit({ id: true }),
    z.strictObject({ type: z.literal("webhook.test"), created_at: z.iso.datetime(), data: z.strictObject({ endpoint_id: z.uuid() }) }),
  ])
  .meta({ id: "WebhookPayload" });

export const EventListSchema = z
  .strictObject({
    data: z.array(EventSchema),
    has_more: z.boolean().describe("Whether more events follow at once: ask again with next_cursor"),
    next_cursor: z.string().nullable().describe("Where to continue; given at the end of the log too, to ask later for what comes next. Null only when no event has been read yet"),
  })
  .meta({ id: "EventList" });

export const CancelResponseSchema = z.strictObject({ id: z.uuid(), status: z.literal("cancelled") }).meta({ id: "CancelResponse" });

export const HealthSchema = z.strictObject({ status: z.literal("ok") }).meta({ id: "Health" });

export const ReadySchema = z
  .strictObject({
    status: z.literal("ok"),
    rate_limits: z
      .enum(["local", "shared", "local: Redis unavailable"])
      .describe("Where the rate limits are counted: this process (no REDIS_URL), Redis shared by every API process, or this process while Redis does not answer"),
  })
  .meta({ id: "Ready" });

const SendBatchItemSchema = z.union([
  SendResponseSchema.extend({ index: z.number().int() }),
  z.strictObject({ index: z.number().int(), error: ProblemSchema }),
]);

export const SendBatchResponseSchema = z
  .strictObject({ accepted: z.number().int(), rejected: z.number().int(), data: z.array(SendBatchItemSchema) })
  .meta({ id: "SendBatchResponse", description: "One result per message, in request order: the accepted message or its problem" });

// The bodies as clients (and tests) read them: derived from the schemas, never re-typed.
export type ProblemView = z.output<typeof ProblemSchema>;
export type SendResponseView = z.output<typeof SendResponseSchema>;
export type SendBatchResponseView = z.output<typeof SendBatchResponseSchema>;
export type AttemptView = z.output<typeof AttemptSchema>;
export type MessageView = z.output<typeof MessageSchema>;

export const DomainIdParams = z.strictObject({ id: z.uuid({ message: "id must be a domain id (UUID)" }) });

const RecordPurposeSchema = z.enum(["dkim", "spf", "dmarc", "bounce_mx"]).meta({
  description: "`bounce_mx`: the bounce domain's MX, pointing where bounces reach sealpost (BOUNCE_MX_HOST)",
});

const DnsRecordSchema = z
  .strictObject({
    purpose: RecordPurposeSchema,
    type: z.enum(["TXT", "MX"]),
    name: z.string().meta({ description: "The fully qualified name to publish the record at" }),
    value: z.string().meta({ description: "The record's data, exactly: the text of a TXT record, `preference host` of an MX record" }),
    state: z.enum(["ok", "missing", "mismatch", "invalid", "pending", "unchecked"]).meta({
      description: "What the last verify found: as in its `checks`; `unchecked` before the first verify, or since the record changed (a new key, another BOUNCE_MX_HOST)",
    }),
    found: z.string().nullable().meta({ description: "What DNS held at the last verify, or null" }),
    detail: z.string().nullable().meta({ description: "The last verify's words on this record, or null when unchecked" }),
  })
  .meta({ id: "DnsRecord" });

export const SenderDomainSchema = z
  .strictObject({
    id: z.uuid(),
    name: z.string(),
    bounce_domain: z.string().nullable(),
    status: z.enum(["pending", "verified"]).meta({ description: "`verified` once the DKIM records were found as published" }),
    bounce_status: z.enum(["pending", "verified"]).nullable().meta({
      description: "`verified` once the bounce domain's MX and SPF records were found: from then on it is the envelope sender (`bounce+<token>@<bounce domain>`, one per recipient); null without a bounce domain",
    }),
    created_at: z.iso.datetime(),
    verified_at: z.iso.datetime().nullable(),
    checked_at: z.iso.datetime().nullable().meta({ description: "When the DNS records were last checked" }),
    dkim: z
      .array(
        z.strictObject({
          selector: z.string(),
          algorithm: z.enum(["rsa-sha256", "ed25519-sha256"]),
          state: z.enum(["pending", "active", "retiring", "retired"]).meta({
            description:
              "`pending` until its record is seen; `active` signs (the newest seen key of its algorithm); `retiring` replaced by a newer key, still published until `retired_at`; `retired`: its record may be deleted",
          }),
          created_at: z.iso.datetime(),
          verified_at: z.iso.datetime().nullable().meta({ description: "When its DNS record was first seen right" }),
          retired_at: z.iso.datetime().nullable().meta({ description: "When it retires (in the future while `retiring`) or retired" }),
        }),
      )
      .meta({ description: "The domain's DKIM keys (RSA-2048 and Ed25519, RFC 8463). Private keys never leave the server." }),
    records: z.array(DnsRecordSchema).meta({ description: "The DNS records to publish" }),
  })
  .meta({ id: "SenderDomain" });

export const SenderDomainListSchema = z.strictObject({ data: z.array(SenderDomainSchema) }).meta({ id: "SenderDomainList" });

export const DeleteDomainResponseSchema = z.strictObject({ id: z.uuid(), deleted: z.literal(true) }).meta({ id: "DeleteDomainResponse" });

export const VerifyDomainResponseSchema = z
  .strictObject({
    status: z.enum(["verified", "pending", "failed"]).meta({
      description: "`verified`: every DKIM record holds our key; `failed`: one is missing or wrong; `pending`: DNS did not answer, try again",
    }),
    bounce_status: z.enum(["verified", "pending", "failed"]).nullable().meta({
      description: "The bounce domain's: `verified` when its MX names BOUNCE_MX_HOST and it has an SPF record; null without a bounce domain",
    }),
    checks: z.array(
      z.strictObject({
        purpose: RecordPurposeSchema,
        name: z.string(),
        state: z.enum(["ok", "missing", "mismatch", "invalid", "pending"]),
        expected: z.string(),
        found: z.string().nullable(),
        detail: z.string(),
        policy: z.string().optional().meta({ description: "DMARC: the published p= policy" }),
      }),
    ),
    domain: SenderDomainSchema,
  })
  .meta({ id: "VerifyDomainResponse" });

export const WebhookIdParams = z.strictObject({ id: z.uuid({ message: "id must be a webhook endpoint id (UUID)" }) });

export const WebhookSchema = z
  .strictObject({
    id: z.uuid(),
    url: z.string(),
    description: z.string().nullable(),
    event_types: z.array(z.string()).describe("The types sent; empty: all"),
    enabled: z.boolean(),
    disabled_reason: z.string().nullable().describe("Why deliveries stopped: 410 Gone, five days of failures, or the API"),
    failing_since: z.iso.datetime().nullable().describe("Since when every attempt failed; null after a success"),
    previous_secret_valid_until: z.iso.datetime().nullable().describe("After a rotation: until when the previous secret also signs"),
    created_at: z.iso.datetime(),
    updated_at: z.iso.datetime(),
  })
  .meta({ id: "Webhook" });

export const WebhookWithSecretSchema = WebhookSchema.extend({
  secret: z.string().describe("The signing secret (whsec_...), shown this once: store it where your receiver reads it"),
}).meta({ id: "WebhookWithSecret" });

export const WebhookListSchema = z.strictObject({ data: z.array(WebhookSchema) }).meta({ id: "WebhookList" });

export const DeleteWebhookResponseSchema = z.strictObject({ id: z.uuid(), deleted: z.literal(true) }).meta({ id: "DeleteWebhookResponse" });

export const TestWebhookResponseSchema = z
  .strictObject({ delivery_id: z.string().describe("See it in GET /webhooks/{id}/deliveries") })
  .meta({ id: "TestWebhookResponse" });

export const WebhookDeliveryListSchema = z
  .strictObject({
    data: z.array(z.strictObject({
      id: z.string(),
      event_id: z.string().nullable().describe("The event sent (its webhook-id); null for a test"),
      state: z.enum(["pending", "delivered", "failed"]),
      attempts: z.number().int(),
      next_attempt_at: z.iso.datetime().nullable(),
      last_status: z.number().int().nullable(),
      last_error: z.string().nullable(),
      created_at: z.iso.datetime(),
      finished_at: z.iso.datetime().nullable(),
      attempt_log: z.array(z.strictObject({
        attempt: z.number().int(), started_at: z.iso.datetime(), duration_ms: z.number().int(), ip: z.string().nullable(),
        status_code: z.number().int().nullable(), error: z.string().nullable(),
      })),
    })),
    next_cursor: z.string().nullable(),
  })
  .meta({ id: "WebhookDeliveryList" });

export const RetryWebhookResponseSchema = z.strictObject({ retried: z.number().int() }).meta({ id: "RetryWebhookResponse" });

// ---- suppressions (issue 13) -----------------------------------------------------

export const SuppressionSchema = z
  .strictObject({
    address: z.string().meta({ description: "The suppressed address, in lower case" }),
    domain: z.string().meta({ description: "The sender (From) domain whose mail no longer goes to it: each domain has its own list" }),
    reason: z.enum(SUPPRESSION_REASONS).meta({
      description: "`hard_bounce`: a receiver answered that the address does not exist (a 5.1.x or 5.2.1 reply); `complaint`: its owner reported the mail as spam; `manual`: added through the API or CLI",
    }),
    created_at: z.iso.datetime(),
    message_id: z.uuid().nullable().meta({ description: "The message whose reply put it here (null for a manual entry)" }),
    reply: z
      .strictObject({ code: z.number().int().nullable(), enhanced_code: z.string().nullable(), text: z.string().nullable() })
      .nullable()
      .meta({ description: "The receiver's reply that is the evidence (null for a manual entry)" }),
    description: z.string().nullable().meta({ description: "A manual entry's note" }),
  })
  .meta({ id: "Suppression" });

export const SuppressionListSchema = z
  .strictObject({ data: z.array(SuppressionSchema), next_cursor: z.string().nullable() })
  .meta({ id: "SuppressionList" });

export const DeleteSuppressionResponseSchema = z
  .strictObject({
    address: z.string(),
    removed_from: z.array(z.string()).meta({ description: "The sender domains whose lists no longer hold the address" }),
  })
  .meta({ id: "DeleteSuppressionResponse" });

// ---- delivery receipts (issue 15) --------------------------------------------------

export const ReceiptResponseSchema = z
  .strictObject({
    receipt: z.string().meta({ description: "A JWT (compact JWS, alg EdDSA): header.payload.signature; the evidence is its `receipt` claim" }),
    key_id: z.string().meta({ description: "The `kid` of the key that signed it" }),
    keys_url: z.literal("/.well-known/jwks.json").meta({ description: "Where the public keys are" }),
  })
  .meta({ id: "ReceiptResponse" });

export const JwksSchema = z
  .strictObject({
    keys: z.array(
      z.strictObject({
        kty: z.literal("OKP"),
        crv: z.literal("Ed25519"),
        x: z.string(),
        kid: z.string(),
        alg: z.literal("EdDSA"),
        use: z.literal("sig"),
      }),
    ),
  })
  .meta({ id: "Jwks" });

export const TlsPolicyRuleSchema = z
  .strictObject({
    id: z.uuid().nullable().meta({ description: "Null for a rule of SMTP_TLS_POLICY_MAP (change it in the configuration)" }),
    pattern: z.string().meta({ description: 'The recipient domain ("bank.example") or the domains under one (".bank.example")' }),
    policy: z.literal("required"),
    mx: z.array(z.string()).meta({ description: "Only these MX hosts are tried (\"*.\" covers one label); empty: any" }),
    fingerprints: z.array(z.string()).meta({
      description: "Only a certificate with one of these SHA-256 fingerprints is accepted, instead of a trusted CA and the MX name; empty: a trusted CA and the MX name",
    }),
    origin: z.enum(["config", "api"]),
    description: z.string().nullable(),
    created_at: z.iso.datetime().nullable(),
  })
  .meta({ id: "TlsPolicyRule" });

export const TlsPolicyListSchema = z.strictObject({ data: z.array(TlsPolicyRuleSchema) }).meta({ id: "TlsPolicyList" });

export const TlsPolicyIdParams = z.strictObject({ id: z.uuid({ message: "id must be a TLS policy rule id (UUID)" }) });

export const DeleteTlsPolicyResponseSchema = z.strictObject({ id: z.uuid(), deleted: z.literal(true) }).meta({ id: "DeleteTlsPolicyResponse" });

const TlsReportSchema = z
  .strictObject({
    "organization-name": z.string(),
    "date-range": z.strictObject({ "start-datetime": z.string(), "end-datetime": z.string() }),
    "contact-info": z.string(),
    "report-id": z.string(),
    policies: z.array(
      z.strictObject({
        policy: z.strictObject({
          "policy-type": z.enum(["sts", "tlsa", "no-policy-found"]),
          "policy-string": z.array(z.string()).optional(),
          "policy-domain": z.string(),
          "mx-host": z.array(z.string()).optional(),
        }),
        summary: z.strictObject({ "total-successful-session-count": z.number().int(), "total-failure-session-count": z.number().int() }),
        "failure-details": z.array(
          z.strictObject({
            "result-type": z.enum(["starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted", "validation-failure", "sts-policy-invalid", "sts-webpki-invalid", "dnssec-invalid"]),
            "sending-mta-ip": z.string().optional(),
            "receiving-mx-hostname": z.string().optional(),
            "receiving-ip": z.string().optional(),
            "failed-session-count": z.number().int(),
            "additional-information": z.string().optional(),
            "failure-reason-code": z.string().optional(),
          }),
        ),
      }),
    ),
  })
  .meta({ id: "TlsReport", description: "An aggregate report in the JSON format of RFC 8460 section 4.4" });

export const TlsReportListSchema = z
  .strictObject({ date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/).meta({ description: "The UTC day, YYYY-MM-DD" }), reports: z.array(TlsReportSchema) })
  .meta({ id: "TlsReportList" });
