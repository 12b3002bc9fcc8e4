-- sealpost least-privilege database roles.
--
-- Run by an operator AFTER migrating, as a superuser or as the owner of the tables (the
-- role that ran `sealpost migrate`; it needs CREATEROLE the first time, to create the two
-- roles). Run it again after every migration that adds or changes tables. It is not a
-- migration: privileges belong to a deployment, not to the schema, and a development
-- database (embedded PGlite, one owner role) does not need them.
--
--   psql "postgresql://owner@db/sealpost" -v ON_ERROR_STOP=1 -f prisma/roles.sql
--
-- It creates two group roles that cannot log in, sealpost_api and sealpost_worker, and
-- gives each exactly what its process does to the database. Every statement is in a
-- repository under src/db/, so each grant below names the functions that need it; a
-- grant no function needs is one to remove. The owner-only functions (run by `sealpost
-- keys` as the owner) need none: insertApiKey, findAllApiKeys, markApiKeyRevoked
-- (db/api-keys.ts), findContentNotUnderKey, rewriteContent, findKeyIdsInUse
-- (db/content.ts), retireKeysNotIn (db/data-keys.ts), findDkimKeysNotUnderKey,
-- rewriteDkimPrivateKey (db/sender-domains.ts), findWebhookSecretsNotUnderKey,
-- rewriteWebhookSecrets, findWebhookEndpointById (db/webhooks.ts).
-- Give each process its own LOGIN role that is a member of one of them:
--
--   CREATE ROLE sealpost_api_1 LOGIN PASSWORD '...' IN ROLE sealpost_api;
--   CREATE ROLE sealpost_worker_1 LOGIN PASSWORD '...' IN ROLE sealpost_worker;
--
-- and start `sealpost serve` / `sealpost worker` under them with MIGRATE_ON_START=false:
-- neither role may read or write _prisma_migrations, let alone change the schema.
-- `sealpost migrate` and `sealpost keys create|list|revoke|rotate-data` keep running as
-- the owner.
--
-- Safe to run again: roles are created only when missing, and every privilege of the
-- two roles on this schema is revoked and granted afresh in one transaction, so the
-- result is exactly what this file says even if an earlier version granted more.
-- Privileges are per database: run it in every database sealpost uses.

BEGIN;

-- Roles are cluster-wide and may exist already (another database, an earlier run). The
-- handler covers two runs racing each other (unique_violation on pg_authid).
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['sealpost_api', 'sealpost_worker'] LOOP
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
END
$$;

-- Start from nothing. Revoking a table privilege also revokes the column privileges of
-- that table, so this clears the column grants below too.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM sealpost_api, sealpost_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM sealpost_api, sealpost_worker;
REVOKE ALL ON SCHEMA public FROM sealpost_api, sealpost_worker;

-- This file changes nothing but these two roles. Before PostgreSQL 15, though, every
-- role may create tables in public through PUBLIC, and a process role that can create
-- objects could shadow sealpost's own: there, once the owner holds CREATE on public
-- itself, also run `REVOKE CREATE ON SCHEMA public FROM PUBLIC` (the default since 15).

-- Connecting and resolving names. CONNECT is granted explicitly because hardened
-- clusters revoke it from PUBLIC; the database name is only known at run time.
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO sealpost_api, sealpost_worker', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO sealpost_api, sealpost_worker;

-- ---------------------------------------------------------------------------------
-- sealpost_api: `sealpost serve`. Authenticates keys, accepts messages (one INSERT
-- with CTEs, insertMessages in src/db/messages.ts), reads them back, cancels. It never
-- deletes a message and never records delivery results; the only row it deletes is a
-- sender domain an admin key removes.
-- ---------------------------------------------------------------------------------

-- db/api-keys.ts: findApiKeyById (ApiKeyVerifier loads a key's record and hash by id),
-- countActiveApiKeys (`serve` at start). Keys are created and revoked by the owner
-- (CLI), so no INSERT/UPDATE: a compromised API cannot mint or un-revoke keys.
GRANT SELECT ON api_keys TO sealpost_api;

-- SELECT (db/messages.ts): findStoredMessage (GET /messages/:id), findMessageSummaries
-- (GET /messages), messageOwnedBy (GET /messages/:id/events), lockMessageStatus
-- (cancel); findContentSamplesUnderKey (db/content.ts, the data-key check at start).
GRANT SELECT ON messages TO sealpost_api;
-- insertMessages: all columns but content_purged_at (finished_at: a message whose every
-- recipient is suppressed is finished when it is accepted).
GRANT INSERT (id, api_key_id, status, tls_policy, tls_policy_source, priority, message_id_header, from_address, from_name, reply_to,
              subject, text_body, html_body, headers, attachments, tags, metadata, send_at, created_at, updated_at, finished_at)
  ON messages TO sealpost_api;
-- lockMessageStatus (SELECT ... FOR UPDATE needs UPDATE on some column) and
-- markMessageCancelled, which sets the final status.
GRANT UPDATE (status, updated_at, finished_at) ON messages TO sealpost_api;

-- The queue rows of a new message (one per recipient domain), and cancel: it counts a
-- message's rows and moves the untouched ones (attempts = 0) to 'cancelled'. The lease
-- and scheduling columns are the worker's: the API writes next_attempt_at only in the
-- INSERT, and lease_owner only because the cancel statement clears it. It reads
-- next_attempt_at and created_at only to show, in GET /messages/:id, when a recipient is
-- tried next and when retrying ends (created_at + SMTP_MAX_RETRY), and lease_owner to show
-- a recipient or message whose delivery a worker holds as `sending` (findStoredMessage,
-- findMessageSummaries and its status filter: the claim no longer writes that status).
-- SELECT: insertMessages (RETURNING id, message_id, domain), countDeliveriesOf and
-- cancelUntouchedDeliveries (db/deliveries.ts: message_id, state, attempts),
-- findStoredMessage and findMessageSummaries (state, next_attempt_at, created_at, lease_owner).
GRANT SELECT (id, message_id, domain, state, attempts, next_attempt_at, created_at, lease_owner) ON deliveries TO sealpost_api;
-- insertMessages; api_key_id and high_priority are the claim's fair-queue keys.
GRANT INSERT (message_id, api_key_id, high_priority, domain, state, next_attempt_at, created_at) ON deliveries TO sealpost_api;
GRANT UPDATE (state, lease_owner) ON deliveries TO sealpost_api; -- cancelUntouchedDeliveries
GRANT USAGE ON SEQUENCE deliveries_id_seq TO sealpost_api; -- insertMessages: BIGSERIAL default (nextval)

-- Recipient rows of a new message; GET /messages/:id shows them with their last
-- response; cancel marks them cancelled. SELECT: findStoredMessage, findMessageAttempts
-- (the recipient's address), insertMessages (RETURNING), markRecipientsCancelled (WHERE).
GRANT SELECT ON recipients TO sealpost_api;
GRANT INSERT (message_id, delivery_id, position, kind, address, name, status, updated_at) ON recipients TO sealpost_api; -- insertMessages
GRANT UPDATE (status, updated_at) ON recipients TO sealpost_api; -- markRecipientsCancelled
GRANT USAGE ON SEQUENCE recipients_id_seq TO sealpost_api; -- insertMessages

-- Delivery evidence is shown by GET /messages/:id, /messages/:id/events and /events
-- (findStoredMessage, findMessageAttempts, findEvents); only the worker writes it.
GRANT SELECT ON delivery_attempts TO sealpost_api;

-- Events (issue 12): the send statement writes each new recipient's queued or scheduled
-- event (insertMessages), cancel each recipient's cancelled event (markRecipientsCancelled);
-- GET /events reads them (findEvents). txid and created_at have defaults.
GRANT SELECT ON events TO sealpost_api;
GRANT INSERT (type, api_key_id, message_id, recipient_id, created_at) ON events TO sealpost_api;
GRANT USAGE ON SEQUENCE events_id_seq TO sealpost_api; -- insertMessages, markRecipientsCancelled

-- Webhook endpoints are managed through the API (insertWebhookEndpoint, findWebhookEndpoints,
-- findWebhookEndpoint, updateWebhookEndpoint, deleteWebhookEndpoint, db/webhooks.ts). The
-- statements that write events fan them out to deliveries (fanOutToWebhooks in
-- insertMessages and markRecipientsCancelled); a test delivery is inserted by
-- insertTestDelivery, and failed ones made due again by retryFailedDeliveries. The log is
-- read by findWebhookDeliveries. The API sends nothing itself.
GRANT SELECT, DELETE ON webhook_endpoints TO sealpost_api;
GRANT INSERT (id, api_key_id, url, description, event_types, secret, created_at, updated_at) ON webhook_endpoints TO sealpost_api;
GRANT UPDATE (url, description, event_types, enabled, disabled_reason, failing_since, secret, previous_secret, previous_secret_until, updated_at)
  ON webhook_endpoints TO sealpost_api;
-- (SELECT on webhook_deliveries also serves queueStats, db/metrics.ts: /metrics counts the
-- due deliveries and the webhook backlog, with the SELECT on deliveries above; the worker's
-- grants below cover the same when it serves METRICS_LISTEN.)
GRANT SELECT ON webhook_deliveries TO sealpost_api;
GRANT INSERT (endpoint_id, event_id, state, next_attempt_at, created_at) ON webhook_deliveries TO sealpost_api;
GRANT UPDATE (state, next_attempt_at, finished_at) ON webhook_deliveries TO sealpost_api; -- retryFailedDeliveries
GRANT DELETE ON webhook_deliveries TO sealpost_api; -- deleteWebhookEndpoint (ON DELETE CASCADE)
GRANT USAGE ON SEQUENCE webhook_deliveries_id_seq TO sealpost_api;
GRANT SELECT, DELETE ON webhook_attempts TO sealpost_api; -- findWebhookDeliveries; the cascade of deleteWebhookEndpoint

-- Idempotency-Key: the send statement (insertMessages) inserts the record, or takes over
-- an expired one (INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= ...); a replay
-- reads it (findIdempotencyRecord, db/idempotency.ts). Expired records are deleted by
-- the worker's retention sweep, not by the API.
GRANT SELECT ON idempotency_records TO sealpost_api;
GRANT INSERT (api_key_id, key, request_hash, status_code, response, message_id, created_at, expires_at)
  ON idempotency_records TO sealpost_api;
GRANT UPDATE (request_hash, status_code, response, message_id, created_at, expires_at)
  ON idempotency_records TO sealpost_api;

-- Suppression list (issue 13). The send statement reads it (insertMessages: a recipient on
-- it is suppressed); GET /suppressions reads it (findSuppressions); POST adds a manual
-- entry (addManualSuppression, which reads an existing one back); DELETE removes entries
-- (removeSuppression). Hard bounces are the worker's to add.
GRANT SELECT, DELETE ON suppressions TO sealpost_api;
GRANT INSERT (sender_domain, address, reason, api_key_id, description, created_at) ON suppressions TO sealpost_api;
GRANT USAGE ON SEQUENCE suppressions_id_seq TO sealpost_api; -- addManualSuppression

-- Delivery receipts (issue 15): GET /messages/:id/receipt signs with the installation's
-- key and GET /.well-known/jwks.json publishes the public ones (findReceiptKeys, which
-- reads the private key to sign); the first receipt of an installation makes the key
-- (insertReceiptKey). Rotation (retireReceiptKey) is the owner's, through the CLI.
GRANT SELECT ON receipt_keys TO sealpost_api;
GRANT INSERT (id, public_jwk, private_key, created_at) ON receipt_keys TO sealpost_api;

-- The TLS policy map (issue 15): /tls-policies lists, adds and removes rules
-- (db/tls-policies.ts: findTlsPolicyRules, findTlsPolicyRule, findTlsPolicyRuleByPattern,
-- insertTlsPolicyRule, deleteTlsPolicyRule).
GRANT SELECT, DELETE ON tls_policies TO sealpost_api;
GRANT INSERT (id, pattern, policy, mx, fingerprints, description, created_by_key_id) ON tls_policies TO sealpost_api;
-- TLS reports (GET /tls-reports, db/tls-reports.ts): findDayAttemptGroups reads the day's
-- evidence with its recipient's queue row (id, domain: granted above) and findMtaStsMaxAges
-- the cached MTA-STS policies' max_age for the policy strings.
GRANT SELECT (domain, policy_id, max_age) ON mta_sts_policies TO sealpost_api;

-- Data keys (the start check, src/security/data-key-check.ts, over db/data-keys.ts): at
-- start `serve` reads the recorded keys (findDataKeys), records the check values of keys
-- it holds (insertDataKeys), fills one recorded by the migration without a value once
-- its key proved itself against stored content (fillCheckValue: check_value), and marks
-- its first key as encrypting (markKeyEncrypting: encrypting_since, retired_at).
-- Retiring keys (retireKeysNotIn) is `keys rotate-data`'s, run as the owner.
GRANT SELECT ON data_keys TO sealpost_api;
GRANT INSERT (id, check_value, created_at) ON data_keys TO sealpost_api;
GRANT UPDATE (check_value, encrypting_since, retired_at) ON data_keys TO sealpost_api;

-- Sender domains (db/sender-domains.ts, the /domains routes of admin keys). SELECT:
-- findSenderDomains, findSenderDomainById, findSenderDomainByName, and insertSenderDomain
-- (it reads the new row back). INSERT: insertSenderDomain, the domain and its keys in one
-- statement. DELETE: deleteSenderDomain (DELETE /domains/:id); its keys go by ON DELETE
-- CASCADE, which runs as the table owner, so no DELETE on dkim_keys. UPDATE:
-- recordDomainCheck (POST /domains/:id/verify) writes the check's time and result and
-- whether the domain and its bounce domain are verified; the name and keys are never changed.
GRANT SELECT ON sender_domains TO sealpost_api;
GRANT INSERT (id, name, bounce_domain, created_by_key_id, created_at) ON sender_domains TO sealpost_api;
GRANT UPDATE (verified_at, checked_at, check_result, bounce_verified_at) ON sender_domains TO sealpost_api;
GRANT DELETE ON sender_domains TO sealpost_api;
-- DKIM keys: insertSenderDomain writes a new domain's key pairs, private key encrypted;
-- the reads above show selectors and public keys. The API never reads a private key back
-- (no SELECT on private_key): only the worker, which signs, does.
-- Rotation: insertDkimKeys (POST /domains/:id/rotate-dkim) adds a new pair the same way;
-- recordDomainCheck marks keys whose record was seen (verified_at) and retires the keys a
-- verified new pair replaces (retired_at).
GRANT INSERT (id, domain_id, selector, algorithm, public_key, private_key, created_at) ON dkim_keys TO sealpost_api;
GRANT SELECT (id, domain_id, selector, algorithm, public_key, created_at, verified_at, retired_at) ON dkim_keys TO sealpost_api;
GRANT UPDATE (verified_at, retired_at) ON dkim_keys TO sealpost_api;

-- ---------------------------------------------------------------------------------
-- sealpost_worker: `sealpost worker`. Claims due deliveries, loads and decrypts the
-- message, records each attempt's evidence, derives statuses, and runs retention.
-- Nothing at all on api_keys: it never authenticates anyone and never needs a key hash.
-- ---------------------------------------------------------------------------------

-- claimDeliveries (db/deliveries.ts) reads the whole message (content, sender,
-- Message-ID, tls_policy); completeDelivery and completeDeliveries set its status, and
-- when the delivery does not hold all of its recipients, completeDelivery locks it
-- (underMessageLock, FOR NO KEY UPDATE) and refreshMessageStatus sets the derived status
-- and finished_at. Retention's purgeContent (db/content.ts) erases the five content columns
-- and stamps content_purged_at; findContentSamplesUnderKey (db/content.ts) reads content
-- for the data-key check at start. It never creates messages.
GRANT SELECT ON messages TO sealpost_worker;
GRANT UPDATE (status, updated_at, finished_at,
              subject, text_body, html_body, headers, attachments, content_purged_at)
  ON messages TO sealpost_worker;

-- The queue (db/deliveries.ts): claimDeliveries takes a lease (attempts, lease_owner,
-- next_attempt_at) with FOR UPDATE SKIP LOCKED; renewLeases, completeDelivery,
-- completeDeliveries, releaseLeases and returnUnstarted (which gives back the attempt
-- count and the lease of rows claimed but never started) write under the lease fence.
-- It never creates or deletes queue rows.
GRANT SELECT ON deliveries TO sealpost_worker;
GRANT UPDATE (state, attempts, lease_owner, next_attempt_at) ON deliveries TO sealpost_worker;

-- Pending recipients of a claimed delivery, the To/Cc headers and every recipient's
-- status (claimDeliveries, which writes none of them), each outcome (completeDelivery,
-- completeDeliveries), and the statuses a message's status derives from (refreshMessageStatus).
GRANT SELECT ON recipients TO sealpost_worker;
GRANT UPDATE (status, attempts, last_code, last_enhanced, last_reply, updated_at) ON recipients TO sealpost_worker;

-- Evidence of every attempt is appended by the completion statements (completeDelivery,
-- completeDeliveries), never changed: it is the record of what happened. They read back
-- which attempt of each recipient came last (RETURNING id, recipient_id, started_at), for
-- its event; SELECT is granted with the webhooks below.
GRANT INSERT (message_id, recipient_id, attempt, mx_host, ip, port, policy, tls, tls_version, cipher,
              verified, verify_error, cert_subject, cert_issuer, cert_not_after, cert_fingerprint,
              dkim_selectors, message_sha256, policy_source, policy_detail, reply_code, enhanced_code, reply_text, outcome, started_at, duration_ms)
  ON delivery_attempts TO sealpost_worker;
GRANT USAGE ON SEQUENCE delivery_attempts_id_seq TO sealpost_worker;

-- Each recipient's new status is an event written by the same completion statements
-- (completeDeliveries); txid and created_at have defaults.
GRANT INSERT (type, api_key_id, message_id, recipient_id, attempt_id, reply_code, enhanced_code, reply_text, retry_at)
  ON events TO sealpost_worker;
GRANT USAGE ON SEQUENCE events_id_seq TO sealpost_worker; -- completeDeliveries, recordWebhookAttempt

-- A permanent address failure adds the address to the sender domain's suppression list in
-- the same statement (completeDeliveries: INSERT ... ON CONFLICT (sender_domain, address)
-- DO NOTHING, whose conflict target needs SELECT on the columns it reads). `sealpost
-- inbound`, the bounce receiver, runs as this role too: a late bounce (recordLateBounce,
-- db/reports.ts) adds one the same way, and a complaint (recordComplaint) adds one or
-- turns an entry of another reason into a complaint (ON CONFLICT DO UPDATE).
GRANT INSERT (sender_domain, address, reason, message_id, recipient_id, reply_code, enhanced_code, reply_text) ON suppressions TO sealpost_worker;
GRANT SELECT (sender_domain, address, reason, message_id, recipient_id) ON suppressions TO sealpost_worker;
GRANT UPDATE (reason, message_id, recipient_id, reply_code, enhanced_code, reply_text) ON suppressions TO sealpost_worker;
GRANT USAGE ON SEQUENCE suppressions_id_seq TO sealpost_worker; -- completeDeliveries

-- Webhooks: the completion statements fan events out to deliveries (fanOutToWebhooks);
-- claimWebhookDeliveries leases due ones and reads their events whole (EVENT_SELECT, with
-- the attempt's evidence, hence SELECT on every column of delivery_attempts);
-- recordWebhookAttempt writes each attempt, the delivery's state, the endpoint's failing
-- streak, and when it disables an endpoint, its webhook.disabled event;
-- releaseWebhookLeases hands deliveries back. No secret is ever written by the worker.
GRANT SELECT ON delivery_attempts TO sealpost_worker;
GRANT SELECT ON events TO sealpost_worker;
GRANT INSERT (type, api_key_id, endpoint_id, reply_text) ON events TO sealpost_worker;
GRANT SELECT ON webhook_endpoints TO sealpost_worker;
GRANT UPDATE (failing_since, enabled, disabled_reason, updated_at) ON webhook_endpoints TO sealpost_worker;
GRANT SELECT ON webhook_deliveries TO sealpost_worker;
GRANT INSERT (endpoint_id, event_id, state, next_attempt_at) ON webhook_deliveries TO sealpost_worker;
GRANT UPDATE (state, attempts, next_attempt_at, lease_owner, last_status, last_error, finished_at) ON webhook_deliveries TO sealpost_worker;
GRANT USAGE ON SEQUENCE webhook_deliveries_id_seq TO sealpost_worker;
GRANT INSERT (delivery_id, attempt, started_at, duration_ms, ip, status_code, error) ON webhook_attempts TO sealpost_worker;
GRANT USAGE ON SEQUENCE webhook_attempts_id_seq TO sealpost_worker;

-- Retention deletes idempotency records past expires_at (24 h), in batches picked by
-- primary key (deleteExpiredIdempotencyRecords, db/idempotency.ts). A DELETE needs SELECT on the columns it filters on, here the key columns
-- and expires_at, and nothing else: the stored responses and request hashes are never
-- read by the worker.
GRANT SELECT (api_key_id, key, expires_at) ON idempotency_records TO sealpost_worker;
GRANT DELETE ON idempotency_records TO sealpost_worker;

-- Data keys: the same start check as the API's (findDataKeys, insertDataKeys,
-- fillCheckValue), except that the worker writes no content, so it never marks a key
-- as encrypting (no markKeyEncrypting: no UPDATE of encrypting_since).
GRANT SELECT ON data_keys TO sealpost_worker;
GRANT INSERT (id, check_value, created_at) ON data_keys TO sealpost_worker;
GRANT UPDATE (check_value) ON data_keys TO sealpost_worker;

-- DKIM signing: findSigningKeys (db/sender-domains.ts) reads a verified domain's newest
-- verified, unretired key pair of each algorithm, private key included (encrypted; the
-- worker decrypts it to sign).
-- Nothing written. Bounce addresses: findBounceDomain reads a sender domain's bounce
-- domain once it is verified, for the envelope sender; the bounce receiver accepts mail for
-- verified bounce domains only (isVerifiedBounceDomain) and reads the recipient a bounce
-- address names with its message's sender (findReportedRecipient, db/reports.ts, under the
-- SELECT on recipients and messages above).
GRANT SELECT (id, name, verified_at, bounce_domain, bounce_verified_at) ON sender_domains TO sealpost_worker;
GRANT SELECT (id, domain_id, selector, algorithm, private_key, created_at, verified_at, retired_at) ON dkim_keys TO sealpost_worker;

-- TLS policy layers (issue 15): the operator's map is read (findTlsPolicyRules); MTA-STS
-- policies are cached for every worker (db/mta-sts.ts: findMtaStsPolicy, saveMtaStsPolicy,
-- an upsert whose conflict target needs SELECT, noteMtaStsError).
GRANT SELECT ON tls_policies TO sealpost_worker;
GRANT SELECT, INSERT, UPDATE ON mta_sts_policies TO sealpost_worker;
-- Sending TLS reports (TLS_REPORTS_SEND=on, worker/tls-report-sender.ts): the day's evidence
-- (findDayAttemptGroups, under the SELECTs above) and one submission row per report and rua
-- (claimTlsReportSubmission: an upsert whose conflict target needs SELECT; finishTlsReportSubmission).
GRANT SELECT, INSERT, UPDATE ON tls_report_submissions TO sealpost_worker;

COMMIT;
