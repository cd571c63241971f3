-- Webhook definitions, the event outbox and the delivery queue (DESIGN invariants 3 and 4).
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    service_uri TEXT NOT NULL,
    custom_headers TEXT NOT NULL,
    actions TEXT NOT NULL,
    status TEXT NOT NULL,
    scope TEXT NOT NULL,
    location TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One row per event that at least one webhook wanted; `body` is the exact bytes every attempt
-- sends.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per (event, webhook): the queue. A worker claims a row by setting lease_until and
-- lease_owner (the claiming process's instance id; a restarted single-node server takes its
-- previous incarnation's leases back at once instead of waiting for them to expire).
-- AUTOINCREMENT: ids are never reused, so a late attempt result for a delivery deleted with its
-- webhook can never be applied to a newer delivery that took the same id.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook TEXT NOT NULL COLLATE NOCASE,
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Attempts made before the current round; a redelivery starts a new round, which gets the
    -- whole retry schedule again while attempt numbers keep counting.
    round_start INTEGER NOT NULL DEFAULT 0,
    -- Attempts allowed per round: 1 for a ping; NULL means the retry schedule decides.
    max_attempts INTEGER,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    lease_owner TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Claiming reads each webhook's due rows in order through this index, so one webhook's backlog
-- never hides another's rows (DESIGN invariant 5).
CREATE INDEX deliveries_claim ON deliveries(webhook, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_webhook ON deliveries(webhook, id);
CREATE INDEX deliveries_event ON deliveries(event_id);

-- Every attempt, with the request as sent (secret header values redacted) and the response.
-- AUTOINCREMENT: list-events pages by attempt id, which must only grow.
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    webhook TEXT NOT NULL COLLATE NOCASE,
    event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    request_uri TEXT NOT NULL,
    request_headers TEXT NOT NULL,
    status_code INTEGER,
    reason TEXT,
    response_headers TEXT,
    response_body TEXT,
    error TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX attempts_webhook ON attempts(webhook, id);
CREATE INDEX attempts_started ON attempts(started_at);
-- Deleting a webhook or pruning deliveries cascades to attempts by delivery id.
CREATE INDEX attempts_delivery ON attempts(delivery_id);
