-- The PostgreSQL backend's schema: the same tables as the SQLite migrations beside it
-- (../sqlite/0001 … 0010, whose comments explain each column), written as one migration
-- because PostgreSQL starts where SQLite's history ended. Differences from SQLite:
--   * integers are BIGINT (Unix milliseconds, sizes, ids), flags are BOOLEAN, bodies BYTEA;
--   * ids are identity columns, which like SQLite's AUTOINCREMENT are never reused;
--   * names SQLite compares with COLLATE NOCASE use a nondeterministic ICU collation, so
--     equality, uniqueness and IN are case-insensitive as there;
--   * the two triggers that move a manifest's last-update time are PL/pgSQL.
-- Migrations run by number under an advisory lock, so nodes starting together run each once.

CREATE COLLATION IF NOT EXISTS wharf_nocase (
    provider = icu, locale = 'und-u-ks-level2', deterministic = false
);

CREATE TABLE repositories (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    write_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    delete_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    read_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    list_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    teleport_enabled BOOLEAN
);

CREATE TABLE repo_blobs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    used_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);
CREATE INDEX repo_blobs_used ON repo_blobs(used_at);

CREATE TABLE manifests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    config_media_type TEXT,
    config_digest TEXT,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    write_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    delete_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    read_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    list_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    quarantine_state TEXT,
    quarantine_details TEXT,
    quarantine_push TEXT,
    UNIQUE (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    created_at BIGINT,
    write_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    delete_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    read_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    list_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_digest ON tags(repo_id, digest);

CREATE FUNCTION wharf_tags_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE manifests SET updated_at = NEW.updated_at
    WHERE repo_id = OLD.repo_id AND digest = OLD.digest;
    RETURN NULL;
END $$;
CREATE TRIGGER tags_moved AFTER UPDATE OF digest ON tags
    FOR EACH ROW WHEN (OLD.digest <> NEW.digest) EXECUTE FUNCTION wharf_tags_moved();

CREATE FUNCTION wharf_tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE manifests
    SET updated_at = (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
    WHERE repo_id = OLD.repo_id AND digest = OLD.digest;
    RETURN NULL;
END $$;
CREATE TRIGGER tags_removed AFTER DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION wharf_tags_removed();

CREATE TABLE manifest_blobs (
    manifest_id BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    repo_id BIGINT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (manifest_id, digest)
);
CREATE INDEX manifest_blobs_link ON manifest_blobs(repo_id, digest);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    finished_digest TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhooks (
    name TEXT COLLATE wharf_nocase PRIMARY KEY,
    service_uri TEXT NOT NULL,
    custom_headers TEXT NOT NULL,
    actions TEXT NOT NULL,
    status TEXT NOT NULL,
    scope TEXT NOT NULL,
    location TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    signing_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    signing_secret TEXT,
    signing_previous_secret TEXT,
    signing_previous_until BIGINT,
    payload_format TEXT NOT NULL DEFAULT 'acr'
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook TEXT COLLATE wharf_nocase NOT NULL,
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    round_start BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_owner TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    payload_format TEXT NOT NULL DEFAULT 'acr'
);
CREATE INDEX deliveries_claim ON deliveries(webhook, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_webhook ON deliveries(webhook, id);
CREATE INDEX deliveries_event ON deliveries(event_id);

CREATE TABLE attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    webhook TEXT COLLATE wharf_nocase NOT NULL,
    event_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    request_uri TEXT NOT NULL,
    request_headers TEXT NOT NULL,
    status_code BIGINT,
    reason TEXT,
    response_headers TEXT,
    response_body TEXT,
    error TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX attempts_webhook ON attempts(webhook, id);
CREATE INDEX attempts_started ON attempts(started_at);
CREATE INDEX attempts_delivery ON attempts(delivery_id);

CREATE TABLE auth_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE scope_maps (
    name TEXT COLLATE wharf_nocase PRIMARY KEY,
    description TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    name TEXT COLLATE wharf_nocase PRIMARY KEY,
    scope_map TEXT COLLATE wharf_nocase NOT NULL,
    status TEXT NOT NULL,
    passwords TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_scope_map ON tokens(scope_map);

CREATE TABLE registry_policies (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    quarantine_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    retention_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    retention_days BIGINT NOT NULL DEFAULT 7,
    retention_updated_at BIGINT
);
INSERT INTO registry_policies (id) VALUES (1);

-- The database's identity (see ../sqlite/0010_store_id.sql), and a value sealed with the
-- secret key of the first node: every node must seal with the same key, and one started with
-- another key is refused at start-up instead of failing to open every secret later.
CREATE TABLE store_identity (
    one BIGINT PRIMARY KEY CHECK (one = 1),
    store_id TEXT NOT NULL,
    key_check TEXT
);
INSERT INTO store_identity (one, store_id) VALUES (1, replace(gen_random_uuid()::text, '-', ''));
