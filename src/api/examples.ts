// Examples for openapi.yaml: for each operation, request bodies, successful answers and
// the problems it can answer. They are data checked like code: the typed ones are checked
// by the compiler against the zod types, every one is validated at test time against
// both the zod schema the route uses and the JSON Schema published in the contract
// (test/unit/openapi-examples.test.ts), and the validation problems are not written by
// hand but produced by the route's own parsing of an invalid input. So an example cannot
// drift from what the API accepts and answers.
import type { z } from "zod";
import { AppError, ERROR_CODES, summarizeFieldErrors, type ErrorCode } from "../domain/errors.ts";
import { SendRequestSchema } from "../domain/message.ts";
import { AddDomainRequestSchema } from "../domain/sender-domain.ts";
import { encodeEventCursor } from "../domain/event.ts";
import { encodeCursor } from "../services/messages.ts";
import { CreateWebhookSchema, RetryWebhookSchema, UpdateWebhookSchema } from "../services/webhooks.ts";
import { problemFor } from "./plugins/errors.ts";
import { problem, type Problem } from "./problem.ts";
import { parseInput } from "./route.ts";
import { IdParams, type EventListSchema, type WebhookDeliveryListSchema, type WebhookListSchema, type WebhookSchema, type WebhookWithSecretSchema, type EventsSchema, type MessageListSchema, type MessageSchema, type MessageSummarySchema, type SendResponseSchema, type SenderDomainSchema, type VerifyDomainResponseSchema, type SuppressionSchema, type SuppressionListSchema, type DeleteSuppressionResponseSchema, type TlsPolicyRuleSchema, type TlsPolicyListSchema, type DeleteTlsPolicyResponseSchema, type TlsReportListSchema, type ReceiptResponseSchema, type JwksSchema } from "./schemas.ts";

export interface Example {
  summary: string;
  value: unknown;
}

export interface OperationExamples {
  /** Request bodies the operation accepts. */
  request?: Record<string, Example>;
  /** Answers by status: successes, and problems that say more than the generic ones. */
  responses: Record<string, Record<string, Example>>;
}

const REQUEST_ID = "3f1c2a9e-7b4d-4e8a-9c61-0d5e8b2f4a17";
const ID = "6c487633-0f7e-4a5c-9d2b-8e1f3a5b7c90";
const OTHER_ID = "9a2e5d14-3c6b-4f7a-8e90-1b2c3d4e5f60";
const CREATED = "2026-03-02T09:14:07.512Z";

/** The problem the API answers when parsing `value` as the route's `where` fails. */
function validationProblem(schema: z.ZodType, value: unknown, where: "body" | "query" | "params"): Problem {
  try {
    parseInput(schema, value, where);
  } catch (err) {
    if (err instanceof AppError) return problemFor(err, REQUEST_ID);
    throw err;
  }
  throw new Error(`examples: ${JSON.stringify(value)} was expected to be refused`);
}

const p = (code: ErrorCode, detail: string, extra: { status?: number; errors?: Array<{ path: string; message: string }> } = {}): Problem =>
  problem(code, detail, REQUEST_ID, extra);

/**
 * The problem shown for an error status when an operation has nothing more specific. The
 * details are the API's own wording for the commonest cause of each status.
 */
export function genericProblem(status: number | "default", scope: string | null): Example {
  switch (status) {
    case 400:
      return { summary: "The body is not valid JSON", value: p("invalid_request", "the body is not valid JSON", { status: 400 }) };
    case 401:
      return { summary: "Missing, invalid or revoked API key", value: p("unauthorized", "the API key is not valid") };
    case 403:
      return { summary: "The key lacks the scope", value: p("forbidden", `this API key lacks the "${scope ?? "read"}" scope`) };
    case 404:
      return { summary: "No such message for this key", value: p("not_found", "no message with this id") };
    case 409:
      return { summary: "Conflict", value: p("conflict", "the request conflicts with the current state") };
    case 413:
      return { summary: "Body too large", value: p("payload_too_large", "the request body is larger than the limit") };
    case 415:
      return { summary: "Body is not JSON", value: p("unsupported_media_type", "send the body as application/json") };
    case 429:
      return { summary: "Rate limited", value: p("rate_limited", `rate limit exceeded for this ${scope ? "API key" : "client address"}; retry in 12 s`) };
    case 503:
      return { summary: "Database unavailable", value: p("service_unavailable", "the database is unavailable; retry later") };
    case "default":
    case 500:
      return { summary: "Unexpected error", value: p("internal", "an internal error occurred") };
    default: {
      const code = (Object.keys(ERROR_CODES) as ErrorCode[]).find((c) => ERROR_CODES[c].status === status) ?? "invalid_request";
      return { summary: ERROR_CODES[code].title, value: p(code, ERROR_CODES[code].title.toLowerCase(), { status }) };
    }
  }
}

// ---- POST /send ------------------------------------------------------------------

const passwordReset = {
  from: "Shop <noreply@shop.example>",
  to: "alice@example.com",
  subject: "Reset your password",
  text: "Follow https://shop.example/reset/abc123 to choose a new password. The link expires in one hour.",
  tls: "required",
  priority: "high",
  tags: ["password-reset"],
  metadata: { user_id: "4411" },
} satisfies z.input<typeof SendRequestSchema>;

const receipt = {
  from: { name: "Shop", address: "receipts@shop.example" },
  to: [{ name: "Bob Martin", address: "bob@example.net" }],
  bcc: "archive@shop.example",
  reply_to: "Shop support <support@shop.example>",
  subject: "Your receipt for order 1042",
  text: "Thank you for your order 1042. Your receipt is attached.",
  html: "<p>Thank you for your order <strong>1042</strong>. Your receipt is attached.</p>",
  headers: { "X-Order-Id": "1042" },
  attachments: [
    { filename: "receipt-1042.txt", content: Buffer.from("Order 1042\nTotal: 42.00 EUR\n").toString("base64"), content_type: "text/plain" },
  ],
  tags: ["receipt"],
} satisfies z.input<typeof SendRequestSchema>;

const scheduled = {
  from: "Shop <noreply@shop.example>",
  to: "carol@example.org",
  subject: "Your trial ends tomorrow",
  text: "Your trial of Shop Pro ends tomorrow at noon.",
  send_at: "2026-03-03T08:00:00Z",
} satisfies z.input<typeof SendRequestSchema>;

/** A first attempt at a send request, with the three commonest mistakes. */
const invalidSend = { from: "Shop", to: "alice@example.com, bob@example.com", text: "hello" };

const accepted = { id: ID, status: "queued", tls_policy: "required", created_at: CREATED } satisfies z.output<typeof SendResponseSchema>;

const sendMessage: OperationExamples = {
  request: {
    "password-reset": { summary: "A password reset that must travel over verified TLS", value: passwordReset },
    receipt: { summary: "A receipt with an HTML part, an attachment, a custom header and a Bcc", value: receipt },
    scheduled: { summary: "A reminder scheduled for later", value: scheduled },
  },
  responses: {
    202: {
      queued: { summary: "Accepted and queued", value: accepted },
      suppressed: {
        summary: "Accepted; one recipient is on the sender domain's suppression list and is not sent to",
        value: { ...accepted, suppressed: ["old-address@example.com"] } satisfies z.output<typeof SendResponseSchema>,
      },
      allSuppressed: {
        summary: "Every recipient is suppressed: accepted and finished at once, nothing is sent (do not retry)",
        value: { ...accepted, status: "suppressed", suppressed: ["alice@example.com"] } satisfies z.output<typeof SendResponseSchema>,
      },
      scheduled: {
        summary: "Accepted and scheduled",
        value: { id: OTHER_ID, status: "scheduled", tls_policy: "opportunistic", created_at: CREATED, send_at: "2026-03-03T08:00:00.000Z" } satisfies z.output<
          typeof SendResponseSchema
        >,
      },
    },
    403: { domain: { summary: "The key may not send from this domain", value: p("forbidden", "this API key may not send from the domain other.example") } },
    409: {
      idempotency: {
        summary: "Idempotency-Key reused with another body",
        value: p("idempotency_conflict", "this Idempotency-Key was already used with a different request body"),
      },
    },
    422: {
      invalid: {
        summary: "A display name without an address in from, two addresses in one to string, no subject",
        value: validationProblem(SendRequestSchema, invalidSend, "body"),
      },
    },
  },
};

// ---- POST /send/batch ------------------------------------------------------------

// /send/batch checks each item on its own and reports the same field errors as /send.
const batchItemErrors = validationProblem(SendRequestSchema, invalidSend, "body").errors ?? [];
const batchItemProblem = problemFor(
  new AppError("invalid_request", summarizeFieldErrors(batchItemErrors, "the message is not valid"), { errors: batchItemErrors }),
  REQUEST_ID,
);

const sendMessageBatch: OperationExamples = {
  request: {
    mixed: { summary: "Two messages, the second one invalid", value: { messages: [passwordReset, invalidSend] } },
  },
  responses: {
    200: {
      mixed: {
        summary: "The first accepted, the second refused with its problem",
        value: { accepted: 1, rejected: 1, data: [{ index: 0, ...accepted }, { index: 1, error: batchItemProblem }] },
      },
    },
  },
};

// ---- reading ---------------------------------------------------------------------

const summary = {
  id: ID,
  status: "delivered",
  tls_policy: "required",
  priority: "high",
  from: { address: "noreply@shop.example", name: "Shop" },
  subject: "Reset your password",
  tags: ["password-reset"],
  metadata: { user_id: "4411" },
  created_at: CREATED,
  send_at: null,
  content_purged: false,
  content_unreadable: null,
} satisfies z.output<typeof MessageSummarySchema>;

const deliveredAttempt = {
  attempt: 1,
  started_at: "2026-03-02T09:14:07.931Z",
  duration_ms: 412,
  outcome: "delivered",
  mx_host: "mx1.example.com",
  ip: "192.0.2.25",
  port: 25,
  policy: "required",
  policy_source: "mta-sts",
  policy_detail: {
    accepted: "default",
    map: null,
    mta_sts: {
      state: "policy", mode: "enforce", id: "20260301T000000", mx: ["mx1.example.com", "*.mx.example.com"],
      expires_at: "2026-03-09T08:00:00.000Z", mx_match: true,
    },
    dane: { state: "off", reason: "no DNSSEC-validating resolver is configured (DANE_RESOLVER)" },
    mx_name_check: "match",
    verified_by: "pkix",
    matched: null,
    tls_required_no: false,
    requiretls: true,
  },
  tls: {
    used: true,
    version: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    verified: true,
    verify_error: null,
    certificate: {
      subject: "CN=mx1.example.com",
      issuer: "CN=R11, O=Let's Encrypt, C=US",
      not_after: "2026-05-20T11:02:44.000Z",
      fingerprint_sha256: "CD:53:0E:4A:9B:71:2F:66:18:A0:3C:5D:E2:47:91:0B:6F:84:2A:C3:D9:15:7E:60:B8:4C:21:F9:03:AE:57:DD",
    },
  },
  dkim: { selectors: ["sp202603r", "sp202603e"] },
  smtp: { code: 250, enhanced_code: "2.0.0", text: "OK: queued as 4Qk2ZT0y3pz9v" },
} satisfies z.output<typeof MessageSchema>["recipients"][number]["delivery_attempts"][number];

const deferredAttempt = {
  ...deliveredAttempt,
  started_at: "2026-03-02T09:14:08.120Z",
  duration_ms: 230,
  outcome: "deferred",
  mx_host: "mx.example.org",
  ip: "198.51.100.7",
  policy: "opportunistic",
  policy_source: "default",
  policy_detail: {
    ...deliveredAttempt.policy_detail,
    mta_sts: { state: "none", reason: "example.org publishes no MTA-STS policy" },
    mx_name_check: "match",
  },
  tls: { ...deliveredAttempt.tls, certificate: { ...deliveredAttempt.tls.certificate, subject: "CN=mx.example.org" } },
  smtp: { code: 451, enhanced_code: "4.2.1", text: "mailbox busy, try again later" },
} satisfies z.output<typeof MessageSchema>["recipients"][number]["delivery_attempts"][number];

const deliveredMessage = {
  ...summary,
  message_id: `<${ID}@shop.example>`,
  reply_to: [],
  updated_at: "2026-03-02T09:14:08.351Z",
  recipients: [
    {
      address: "alice@example.com",
      name: null,
      kind: "to",
      status: "delivered",
      attempts: 1,
      last_response: deliveredAttempt.smtp,
      next_attempt_at: null,
      expires_at: null,
      delivery_attempts: [deliveredAttempt],
    },
  ],
} satisfies z.output<typeof MessageSchema>;

const deferredMessage = {
  ...summary,
  id: OTHER_ID,
  status: "deferred",
  tls_policy: "opportunistic",
  priority: "normal",
  subject: "Your trial ends tomorrow",
  tags: [],
  metadata: null,
  message_id: `<${OTHER_ID}@shop.example>`,
  reply_to: [],
  updated_at: "2026-03-02T09:14:08.350Z",
  recipients: [
    {
      address: "carol@example.org",
      name: null,
      kind: "to",
      status: "deferred",
      attempts: 1,
      last_response: deferredAttempt.smtp,
      next_attempt_at: "2026-03-02T09:15:09.004Z",
      expires_at: "2026-03-05T09:14:07.512Z",
      delivery_attempts: [deferredAttempt],
    },
  ],
} satisfies z.output<typeof MessageSchema>;

const getMessage: OperationExamples = {
  responses: {
    200: {
      delivered: { summary: "Delivered over verified TLS, with the evidence of the attempt", value: deliveredMessage },
      deferred: { summary: "Deferred by the receiving server: when it is tried next and when retrying ends", value: deferredMessage },
    },
    422: { id: { summary: "The id is not a message id", value: validationProblem(IdParams, { id: "1042" }, "params") } },
  },
};

const listMessages: OperationExamples = {
  responses: {
    200: {
      page: {
        summary: "A page of two messages, with a cursor for the next one",
        value: {
          data: [{ ...summary, id: OTHER_ID, status: "deferred", tls_policy: "opportunistic", priority: "normal", subject: "Your trial ends tomorrow", tags: [], metadata: null }, summary],
          next_cursor: encodeCursor(new Date(CREATED), ID),
        } satisfies z.output<typeof MessageListSchema>,
      },
    },
    422: {
      cursor: {
        summary: "A cursor this API did not return",
        value: p("invalid_request", "the cursor is not valid", { errors: [{ path: "query.cursor", message: "not a cursor returned by this API" }] }),
      },
    },
  },
};

const getMessageEvents: OperationExamples = {
  responses: {
    200: {
      log: {
        summary: "The attempt log: a deferral, then delivery",
        value: {
          message_id: OTHER_ID,
          events: [
            { ...deferredAttempt, recipient: "carol@example.org" },
            { ...deferredAttempt, attempt: 2, started_at: "2026-03-02T09:15:09.210Z", outcome: "delivered", smtp: { code: 250, enhanced_code: "2.0.0", text: "OK" }, recipient: "carol@example.org" },
          ],
        } satisfies z.output<typeof EventsSchema>,
      },
    },
  },
};

const eventData = { message_id: OTHER_ID, recipient: { address: "carol@example.org", kind: "to" as const }, tags: ["receipt"], metadata: { order: "1042" } };

const listEvents: OperationExamples = {
  responses: {
    200: {
      page: {
        summary: "Queued, deferred once, then delivered: each with the evidence of its attempt",
        value: {
          data: [
            { id: "evt_1040", type: "message.queued", created_at: "2026-03-02T09:14:07.812Z", data: { ...eventData, smtp: null, next_attempt_at: null, attempt: null } },
            {
              id: "evt_1041", type: "message.deferred", created_at: "2026-03-02T09:14:08.350Z",
              data: { ...eventData, smtp: deferredAttempt.smtp, next_attempt_at: "2026-03-02T09:15:08.350Z", attempt: deferredAttempt },
            },
            {
              id: "evt_1042", type: "message.delivered", created_at: "2026-03-02T09:15:09.441Z",
              data: { ...eventData, smtp: { code: 250, enhanced_code: "2.0.0", text: "OK" }, next_attempt_at: null,
                attempt: { ...deferredAttempt, attempt: 2, started_at: "2026-03-02T09:15:09.210Z", outcome: "delivered", smtp: { code: 250, enhanced_code: "2.0.0", text: "OK" } } },
            },
          ],
          has_more: false,
          next_cursor: encodeEventCursor({ txid: "88231", id: "1042" }),
        } satisfies z.output<typeof EventListSchema>,
      },
    },
    422: {
      type: {
        summary: "An unknown event type",
        value: p("invalid_request", "type: must be one or more of message.queued, message.scheduled, message.delivered, message.deferred, message.bounced, message.failed, message.cancelled, separated by commas", {
          errors: [{ path: "query.type", message: "must be one or more of message.queued, message.scheduled, message.delivered, message.deferred, message.bounced, message.failed, message.cancelled, separated by commas" }],
        }),
      },
    },
  },
};

const WEBHOOK_ID = "2b7c9e41-6d3a-4f58-9b0e-7a1c2d3e4f50";
const exampleWebhook = {
  id: WEBHOOK_ID, url: "https://shop.example/hooks/sealpost", description: "order status in the shop", event_types: ["message.delivered", "message.bounced", "message.failed"] as Array<"message.delivered" | "message.bounced" | "message.failed">,
  enabled: true, disabled_reason: null, failing_since: null, previous_secret_valid_until: null, created_at: CREATED, updated_at: CREATED,
} satisfies z.output<typeof WebhookSchema>;
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const noSuchWebhook = { missing: { summary: "No such endpoint for this key", value: p("not_found", "no webhook endpoint with this id") } };

const createWebhook: OperationExamples = {
  request: {
    someTypes: {
      summary: "Deliveries, bounces and failures to the shop",
      value: { url: exampleWebhook.url, event_types: exampleWebhook.event_types, description: exampleWebhook.description } satisfies z.input<typeof CreateWebhookSchema>,
    },
  },
  responses: {
    201: { created: { summary: "Registered: keep the secret, it is not shown again", value: { ...exampleWebhook, secret: SECRET } satisfies z.output<typeof WebhookWithSecretSchema> } },
    422: {
      plainHttp: { summary: "Not a URL", value: validationProblem(CreateWebhookSchema, { url: "shop.example/hooks" }, "body") },
      unknownType: { summary: "An event type that does not exist", value: validationProblem(CreateWebhookSchema, { url: exampleWebhook.url, event_types: ["message.opened"] }, "body") },
      privateTarget: {
        summary: "In production: a name of a private address",
        value: p("invalid_request", "url: hooks.internal.example resolves to 10.0.0.7 is a loopback, private, link-local or reserved address (allow it with WEBHOOK_ALLOWED_NETWORKS)", {
          errors: [{ path: "url", message: "hooks.internal.example resolves to 10.0.0.7 is a loopback, private, link-local or reserved address (allow it with WEBHOOK_ALLOWED_NETWORKS)" }],
        }),
      },
    },
  },
};

const listWebhooks: OperationExamples = {
  responses: { 200: { one: { summary: "One endpoint", value: { data: [exampleWebhook] } satisfies z.output<typeof WebhookListSchema> } } },
};

const failingWebhook = {
  ...exampleWebhook, enabled: false, disabled_reason: "the endpoint answered 410 Gone", failing_since: "2026-03-04T10:00:00.000Z", updated_at: "2026-03-04T10:00:00.120Z",
} satisfies z.output<typeof WebhookSchema>;

const getWebhook: OperationExamples = {
  responses: {
    200: { enabled: { summary: "Enabled and healthy", value: exampleWebhook }, disabled: { summary: "Disabled: it answered 410 Gone", value: failingWebhook } },
    404: noSuchWebhook,
  },
};

const updateWebhook: OperationExamples = {
  request: { enable: { summary: "Resume deliveries after fixing the receiver", value: { enabled: true } satisfies z.input<typeof UpdateWebhookSchema> } },
  responses: { 200: { enabled: { summary: "Enabled again", value: { ...exampleWebhook, updated_at: "2026-03-05T08:00:00.000Z" } } }, 404: noSuchWebhook },
};

const deleteWebhook: OperationExamples = {
  responses: { 200: { removed: { summary: "Removed", value: { id: WEBHOOK_ID, deleted: true } } }, 404: noSuchWebhook },
};

const rotateWebhookSecret: OperationExamples = {
  responses: {
    200: {
      rotated: {
        summary: "A new secret; the previous one signs beside it for a day",
        value: { ...exampleWebhook, previous_secret_valid_until: "2026-03-03T09:14:07.512Z", updated_at: CREATED, secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" },
      },
    },
    404: noSuchWebhook,
  },
};

const testWebhook: OperationExamples = {
  responses: {
    202: { queued: { summary: "Queued for a worker", value: { delivery_id: "7731" } } },
    404: noSuchWebhook,
    409: { disabled: { summary: "The endpoint is disabled", value: p("conflict", "the endpoint is disabled (the endpoint answered 410 Gone): enable it first with PATCH") } },
  },
};

const listWebhookDeliveries: OperationExamples = {
  responses: {
    200: {
      page: {
        summary: "A delivery that succeeded on its second attempt",
        value: {
          data: [{
            id: "7730", event_id: "evt_1042", state: "delivered", attempts: 2, next_attempt_at: null, last_status: 200, last_error: null,
            created_at: "2026-03-02T09:15:09.441Z", finished_at: "2026-03-02T09:15:14.630Z",
            attempt_log: [
              { attempt: 1, started_at: "2026-03-02T09:15:09.502Z", duration_ms: 15000, ip: "203.0.113.10", status_code: null, error: "no answer within 15000 ms" },
              { attempt: 2, started_at: "2026-03-02T09:15:14.512Z", duration_ms: 118, ip: "203.0.113.10", status_code: 200, error: null },
            ],
          }],
          next_cursor: null,
        } satisfies z.output<typeof WebhookDeliveryListSchema>,
      },
    },
    404: noSuchWebhook,
  },
};

const retryWebhookDeliveries: OperationExamples = {
  request: {
    since: { summary: "Everything that failed since the receiver went down", value: { since: "2026-03-04T10:00:00Z" } satisfies z.input<typeof RetryWebhookSchema> },
  },
  responses: {
    200: { retried: { summary: "Due again now", value: { retried: 12 } } },
    404: noSuchWebhook,
  },
};

const cancelMessage: OperationExamples = {
  responses: {
    200: { cancelled: { summary: "Cancelled before any attempt", value: { id: OTHER_ID, status: "cancelled" } } },
    409: {
      started: { summary: "Too late: sending started", value: p("conflict", "the message is delivered; only queued or scheduled messages can be cancelled") },
    },
  },
};

// ---- /domains ----------------------------------------------------------------------

const DOMAIN_ID = "2b7e4c1a-5d3f-4a6b-8c9d-0e1f2a3b4c5d";
const RSA_P = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwR3n...IDAQAB";
const ED_P = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const UNCHECKED = { state: "unchecked", found: null, detail: null } as const;
const exampleDomain = {
  id: DOMAIN_ID,
  name: "shop.example",
  bounce_domain: "bounces.shop.example",
  status: "pending",
  bounce_status: "pending",
  created_at: CREATED,
  verified_at: null,
  checked_at: null,
  dkim: [
    { selector: "sp202603e", algorithm: "ed25519-sha256", state: "pending", created_at: CREATED, verified_at: null, retired_at: null },
    { selector: "sp202603r", algorithm: "rsa-sha256", state: "pending", created_at: CREATED, verified_at: null, retired_at: null },
  ],
  records: [
    { purpose: "dkim", type: "TXT", name: "sp202603e._domainkey.shop.example", value: `v=DKIM1; k=ed25519; p=${ED_P}`, ...UNCHECKED },
    { purpose: "dkim", type: "TXT", name: "sp202603r._domainkey.shop.example", value: `v=DKIM1; k=rsa; p=${RSA_P}`, ...UNCHECKED },
    { purpose: "spf", type: "TXT", name: "bounces.shop.example", value: "v=spf1 a mx ~all", ...UNCHECKED },
    { purpose: "dmarc", type: "TXT", name: "_dmarc.shop.example", value: "v=DMARC1; p=none", ...UNCHECKED },
    { purpose: "bounce_mx", type: "MX", name: "bounces.shop.example", value: "10 mail.shop.example", ...UNCHECKED },
  ],
} satisfies z.output<typeof SenderDomainSchema>;

const noSuchDomain = { missing: { summary: "No such domain for this key", value: p("not_found", "no such domain") } };

const createDomain: OperationExamples = {
  request: {
    withBounce: { summary: "A domain with a bounce subdomain", value: { name: "shop.example", bounce_domain: "bounces.shop.example" } satisfies z.input<typeof AddDomainRequestSchema> },
  },
  responses: {
    201: { added: { summary: "Added: publish the records, then verify", value: exampleDomain } },
    403: {
      notCovered: {
        summary: "The key may not send from this domain",
        value: p("forbidden", "this API key may not send from shop.example, so it may not add it (its sender domains are set with keys create --domains)", {
          errors: [{ path: "name", message: "is not one of this API key's sender domains" }],
        }),
      },
    },
    409: { duplicate: { summary: "The domain exists already", value: p("conflict", "the domain shop.example exists already", { errors: [{ path: "name", message: "names a domain that exists already" }] }) } },
    422: {
      ipLiteral: { summary: "An IP address instead of a domain", value: validationProblem(AddDomainRequestSchema, { name: "[192.0.2.1]" }, "body") },
      bounceElsewhere: {
        summary: "A bounce domain outside the sender domain",
        value: validationProblem(AddDomainRequestSchema, { name: "shop.example", bounce_domain: "bounces.other.example" }, "body"),
      },
    },
  },
};

const listDomains: OperationExamples = { responses: { 200: { one: { summary: "One domain", value: { data: [exampleDomain] } } } } };
const getDomain: OperationExamples = { responses: { 200: { pending: { summary: "A domain not yet verified", value: exampleDomain } }, 404: noSuchDomain } };
const deleteDomain: OperationExamples = { responses: { 200: { removed: { summary: "Removed", value: { id: DOMAIN_ID, deleted: true } } }, 404: noSuchDomain } };

const verifyChecks = [
  { purpose: "dkim", name: "sp202603e._domainkey.shop.example", state: "ok", expected: `v=DKIM1; k=ed25519; p=${ED_P}`, found: `v=DKIM1; k=ed25519; p=${ED_P}`, detail: "published as expected" },
  {
    purpose: "dkim", name: "sp202603r._domainkey.shop.example", state: "mismatch", expected: `v=DKIM1; k=rsa; p=${RSA_P}`, found: "v=DKIM1; k=rsa; p=MIIBIjANBgkq...old",
    detail: "the record at sp202603r._domainkey.shop.example holds another key: replace it with the expected value",
  },
  { purpose: "spf", name: "bounces.shop.example", state: "ok", expected: "v=spf1 a mx ~all", found: "v=spf1 ip4:192.0.2.25 -all", detail: "an SPF record is published; make sure it lists the hosts that send" },
  {
    purpose: "dmarc", name: "_dmarc.shop.example", state: "missing", expected: "v=DMARC1; p=none", found: null,
    detail: "no DMARC record at _dmarc.shop.example: receivers apply their own policy (a warning; signing does not need it)",
  },
  { purpose: "bounce_mx", name: "bounces.shop.example", state: "ok", expected: "10 mail.shop.example", found: "mail.shop.example", detail: "bounces come back to sealpost" },
] satisfies z.output<typeof VerifyDomainResponseSchema>["checks"];

const verifyDomain: OperationExamples = {
  responses: {
    200: {
      wrongKey: {
        summary: "One DKIM record holds another key; no DMARC record yet",
        value: {
          status: "failed",
          bounce_status: "verified",
          checks: verifyChecks,
          domain: {
            ...exampleDomain, bounce_status: "verified", checked_at: "2026-03-02T09:20:00.000Z",
            // Each record shows what this check found.
            records: exampleDomain.records.map((r) => {
              const c = verifyChecks.find((x) => x.purpose === r.purpose && x.name === r.name)!;
              return { ...r, state: c.state, found: c.found, detail: c.detail };
            }),
          },
        } satisfies z.output<typeof VerifyDomainResponseSchema>,
      },
    },
    404: noSuchDomain,
  },
};

const ROTATED = "2026-09-01T08:00:00.000Z";
const rotateDkim: OperationExamples = {
  responses: {
    200: {
      rotated: {
        summary: "New keys to publish; the current ones sign until these verify",
        value: {
          ...exampleDomain, status: "verified", bounce_status: "verified", verified_at: "2026-03-02T09:20:00.000Z", checked_at: "2026-03-02T09:20:00.000Z",
          dkim: [
            { selector: "sp202603e", algorithm: "ed25519-sha256", state: "active", created_at: CREATED, verified_at: "2026-03-02T09:20:00.000Z", retired_at: null },
            { selector: "sp202603r", algorithm: "rsa-sha256", state: "active", created_at: CREATED, verified_at: "2026-03-02T09:20:00.000Z", retired_at: null },
            { selector: "sp202609e", algorithm: "ed25519-sha256", state: "pending", created_at: ROTATED, verified_at: null, retired_at: null },
            { selector: "sp202609r", algorithm: "rsa-sha256", state: "pending", created_at: ROTATED, verified_at: null, retired_at: null },
          ],
          records: [
            ...exampleDomain.records.map((r) => ({ ...r, state: "ok" as const, found: r.value, detail: "published as expected" })).slice(0, 2),
            { purpose: "dkim", type: "TXT", name: "sp202609e._domainkey.shop.example", value: `v=DKIM1; k=ed25519; p=${ED_P}`, ...UNCHECKED },
            { purpose: "dkim", type: "TXT", name: "sp202609r._domainkey.shop.example", value: `v=DKIM1; k=rsa; p=${RSA_P}`, ...UNCHECKED },
            ...exampleDomain.records.slice(2),
          ],
        } satisfies z.output<typeof SenderDomainSchema>,
      },
    },
    404: noSuchDomain,
    409: {
      waiting: {
        summary: "An earlier rotation still waits for its records",
        value: p("conflict", "a key rotation of shop.example is waiting for its DNS records (sp202609e._domainkey.shop.example, sp202609r._domainkey.shop.example): publish them and verify first"),
      },
    },
  },
};

const health = (what: string): OperationExamples => ({ responses: { 200: { ok: { summary: what, value: { status: "ok" } } } } });

const readyz: OperationExamples = {
  responses: {
    200: {
      ok: { summary: "The database answers; rate limits shared through Redis", value: { status: "ok", rate_limits: "shared" } },
      redisAway: { summary: "Redis does not answer: still ready, limits counted per process", value: { status: "ok", rate_limits: "local: Redis unavailable" } },
    },
    503: { database: { summary: "The database does not answer", value: p("service_unavailable", "the database is not reachable") } },
  },
};

// ---- suppressions ---------------------------------------------------------------

const hardBounce = {
  address: "old-address@example.com",
  domain: "shop.example",
  reason: "hard_bounce",
  created_at: "2026-03-01T17:02:11.408Z",
  message_id: OTHER_ID,
  reply: { code: 550, enhanced_code: "5.1.1", text: "5.1.1 <old-address@example.com>: Recipient address rejected: User unknown in virtual mailbox table" },
  description: null,
} satisfies z.output<typeof SuppressionSchema>;

const unsubscribed = {
  address: "alice@example.com",
  domain: "shop.example",
  reason: "manual",
  created_at: "2026-03-02T10:00:00.000Z",
  message_id: null,
  reply: null,
  description: "unsubscribed from the newsletter",
} satisfies z.output<typeof SuppressionSchema>;

const listSuppressions: OperationExamples = {
  responses: {
    200: {
      page: {
        summary: "A manual entry and a hard bounce, with the reply that put it there",
        value: { data: [unsubscribed, hardBounce], next_cursor: null } satisfies z.output<typeof SuppressionListSchema>,
      },
    },
    403: { domain: { summary: "Another domain's list", value: p("forbidden", "this key may not send from other.example, so it has no suppression list there (its domains: shop.example)") } },
  },
};

const createSuppression: OperationExamples = {
  request: {
    unsubscribe: { summary: "An unsubscribe", value: { address: "alice@example.com", domain: "shop.example", description: "unsubscribed from the newsletter" } },
  },
  responses: {
    201: { added: { summary: "Added", value: unsubscribed } },
    200: { already: { summary: "Already on the list (here as a hard bounce): the entry is kept", value: hardBounce } },
    422: {
      noDomain: {
        summary: "A key that may send from several domains must say which list",
        value: p("invalid_request", 'domain: required: the sender domain whose list the address goes on, such as "shop.example" (this key may send from shop.example, news.shop.example)', {
          errors: [{ path: "domain", message: 'required: the sender domain whose list the address goes on, such as "shop.example" (this key may send from shop.example, news.shop.example)' }],
        }),
      },
    },
  },
};

const deleteSuppression: OperationExamples = {
  responses: {
    200: { removed: { summary: "Removed", value: { address: "alice@example.com", removed_from: ["shop.example"] } satisfies z.output<typeof DeleteSuppressionResponseSchema> } },
    404: { missing: { summary: "Not on any list this key sees", value: p("not_found", "bob@example.com is not on the suppression list of shop.example") } },
  },
};

// ---- delivery receipts --------------------------------------------------------------

const RECEIPT_KID = "rk_mfrggzdfmztwq2lk";
const getMessageReceipt: OperationExamples = {
  responses: {
    200: {
      receipt: {
        summary: "A JWT signed with the installation's Ed25519 key (shortened here); its receipt claim holds each recipient's evidence",
        value: {
          receipt: "eyJhbGciOiJFZERTQSIsImtpZCI6InJrX21mcmdnemRmbXp0d3EybGsiLCJ0eXAiOiJKV1QifQ.eyJyZWNlaXB0Ijp7InZlcnNpb24iOjF9fQ.c2lnbmF0dXJl",
          key_id: RECEIPT_KID,
          keys_url: "/.well-known/jwks.json",
        } satisfies z.output<typeof ReceiptResponseSchema>,
      },
    },
    404: { missing: { summary: "No such message for this key", value: p("not_found", "no message with this id") } },
  },
};

const getReceiptKeys: OperationExamples = {
  responses: {
    200: {
      keys: {
        summary: "The current key",
        value: { keys: [{ kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", kid: RECEIPT_KID, alg: "EdDSA", use: "sig" }] } satisfies z.output<typeof JwksSchema>,
      },
    },
  },
};

// ---- TLS policy map ----------------------------------------------------------------

const bankRule = {
  id: "4b0f8c2e-1d7a-4c55-9e21-6f3a8d2b7c10",
  pattern: "bank.example",
  policy: "required",
  mx: ["mx1.bank.example", "*.mail.bank.example"],
  fingerprints: [],
  origin: "api",
  description: "the bank asked for verified TLS to its own MX hosts",
  created_at: "2026-03-02T10:00:00.000Z",
} satisfies z.output<typeof TlsPolicyRuleSchema>;

const listTlsPolicies: OperationExamples = {
  responses: {
    200: {
      rules: {
        summary: "A rule from SMTP_TLS_POLICY_MAP and one added through the API",
        value: {
          data: [
            { id: null, pattern: ".partner.example", policy: "required", mx: [], fingerprints: [], origin: "config", description: null, created_at: null },
            bankRule,
          ],
        } satisfies z.output<typeof TlsPolicyListSchema>,
      },
    },
  },
};

const createTlsPolicy: OperationExamples = {
  request: {
    pinMx: { summary: "Verified TLS, and only to the bank's own MX hosts", value: { pattern: "bank.example", mx: ["mx1.bank.example", "*.mail.bank.example"], description: bankRule.description } },
  },
  responses: {
    201: { added: { summary: "Added", value: bankRule } },
    403: { tenant: { summary: "A key limited to some sender domains", value: p("forbidden", "the TLS policy map applies to every sender's mail: only an admin key not limited to some sender domains may change it") } },
    409: { exists: { summary: "The pattern has a rule", value: p("conflict", `a rule for bank.example exists already (${bankRule.id}); remove it first to change it`) } },
  },
};

const deleteTlsPolicy: OperationExamples = {
  responses: {
    200: { removed: { summary: "Removed", value: { id: bankRule.id, deleted: true } satisfies z.output<typeof DeleteTlsPolicyResponseSchema> } },
    404: { missing: { summary: "No such rule", value: p("not_found", "no TLS policy rule with this id") } },
  },
};

const listTlsReports: OperationExamples = {
  responses: {
    200: {
      day: {
        summary: "One recipient domain with an MTA-STS policy: 1,830 sessions verified, 3 to a host whose certificate named another",
        value: {
          date: "2026-03-01",
          reports: [
            {
              "organization-name": "mail.shop.example",
              "date-range": { "start-datetime": "2026-03-01T00:00:00Z", "end-datetime": "2026-03-01T23:59:59Z" },
              "contact-info": "mailto:postmaster@mail.shop.example",
              "report-id": "2026-03-01.example.com@mail.shop.example",
              policies: [
                {
                  policy: {
                    "policy-type": "sts",
                    "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.example.com", "mx: *.mx.example.com", "max_age: 604800"],
                    "policy-domain": "example.com",
                    "mx-host": ["mx1.example.com", "*.mx.example.com"],
                  },
                  summary: { "total-successful-session-count": 1830, "total-failure-session-count": 3 },
                  "failure-details": [
                    { "result-type": "certificate-host-mismatch", "receiving-mx-hostname": "b.mx.example.com", "receiving-ip": "192.0.2.26", "failed-session-count": 3, "failure-reason-code": "ERR_TLS_CERT_ALTNAME_INVALID" },
                  ],
                },
              ],
            },
          ],
        } satisfies z.output<typeof TlsReportListSchema>,
      },
    },
    403: { tenant: { summary: "A key limited to some sender domains", value: p("forbidden", "TLS reports describe every sender's mail to a recipient domain: only an admin key not limited to some sender domains may read them") } },
  },
};

/** Examples by operationId; every operation of the contract has an entry (a test checks). */
export const EXAMPLES: Record<string, OperationExamples> = {
  sendMessage,
  sendMessageBatch,
  listMessages,
  getMessage,
  getMessageEvents,
  cancelMessage,
  listEvents,
  createWebhook,
  listWebhooks,
  getWebhook,
  updateWebhook,
  deleteWebhook,
  rotateWebhookSecret,
  testWebhook,
  listWebhookDeliveries,
  retryWebhookDeliveries,
  createDomain,
  listDomains,
  getDomain,
  deleteDomain,
  verifyDomain,
  rotateDkim,
  listSuppressions,
  createSuppression,
  deleteSuppression,
  listTlsPolicies,
  createTlsPolicy,
  deleteTlsPolicy,
  listTlsReports,
  getMessageReceipt,
  getReceiptKeys,
  healthz: health("The process answers"),
  readyz,
};
