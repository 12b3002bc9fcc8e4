-- SMTP TLS reports (RFC 8460, issue 15): GET /tls-reports sums one UTC day of delivery
-- evidence. A BRIN index finds a day's rows without a per-row index cost on the insert
-- path: attempts are appended in time order, so block ranges follow started_at.
CREATE INDEX "delivery_attempts_started_at_brin" ON "delivery_attempts" USING BRIN ("started_at");
