-- Signed webhooks (docs/API.md "Webhooks"): a job's callback URL, each API key's signing
-- secret, and the transactional outbox the workers deliver from.

-- Where to POST the job view when the job ends; NULL: no callback.
ALTER TABLE jobs ADD COLUMN callback_url text;

-- A key's webhook signing secret, in one of two forms (never both):
--   webhook_secret       the 32 secret bytes themselves (no CLIPSTASH_SECRET_KEY when issued);
--   webhook_secret_salt  16 random bytes; the secret is HMAC-SHA256(CLIPSTASH_SECRET_KEY,
--                        context || key id || salt), so a dump of this table alone does not give it.
-- Neither: the key has no secret yet (`clipstash-api keys rotate-webhook-secret NAME`).
ALTER TABLE api_keys
    ADD COLUMN webhook_secret      bytea CHECK (octet_length(webhook_secret) = 32),
    ADD COLUMN webhook_secret_salt bytea CHECK (octet_length(webhook_secret_salt) = 16),
    ADD CONSTRAINT api_keys_one_webhook_secret CHECK (webhook_secret IS NULL OR webhook_secret_salt IS NULL);

-- The outbox: one row per job that reached a terminal state with a callback URL, written in
-- the same statement or transaction as the transition, so a delivery is never lost and the
-- job path never waits for a receiver.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,          -- UUIDv7; `webhook-id` is msg_<id>
    job_id          uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- The body (the job view as JSON), frozen at the first attempt: every retry sends the same bytes.
    payload         bytea,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,                          -- HTTP status of the last answer
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- What the delivery loop polls: due pending rows.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id);
