-- Identities (access control): registry-wide settings, user-defined scope maps and tokens.
-- ACR's five system scope maps live in code, not here. Secrets are never stored in clear:
-- admin passwords are sealed (AES-256-GCM) because they can be shown again (listCredentials);
-- token passwords and the management credential are only ever compared, so only their hashes
-- are kept (argon2 for token passwords, SHA-256 for the high-entropy management credential).
CREATE TABLE auth_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE scope_maps (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    description TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    scope_map TEXT NOT NULL COLLATE NOCASE,
    status TEXT NOT NULL,
    -- JSON list of {name, hash, created_at, expiry}: password1 and password2.
    passwords TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX tokens_scope_map ON tokens(scope_map);
