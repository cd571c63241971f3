-- ACR's changeable attributes (locks) on repositories, tags and manifests, the times the
-- /acr/v1 shapes need, and the quarantine state of manifests. 1 = enabled (ACR's default).
ALTER TABLE repositories ADD COLUMN updated_at INTEGER;
ALTER TABLE repositories ADD COLUMN write_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN read_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN list_enabled INTEGER NOT NULL DEFAULT 1;
-- Teleport preview flag: NULL until a client sets it (then echoed).
ALTER TABLE repositories ADD COLUMN teleport_enabled INTEGER;

ALTER TABLE manifests ADD COLUMN updated_at INTEGER;
ALTER TABLE manifests ADD COLUMN write_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN read_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN list_enabled INTEGER NOT NULL DEFAULT 1;
-- NULL (never quarantined), 'Quarantined', 'Passed' or 'Failed'.
ALTER TABLE manifests ADD COLUMN quarantine_state TEXT;
-- The scanner's JSON string, stored as given.
ALTER TABLE manifests ADD COLUMN quarantine_details TEXT;
-- The push held back while quarantined: JSON {"tags":[…],"host","useragent"}.
ALTER TABLE manifests ADD COLUMN quarantine_push TEXT;

ALTER TABLE tags ADD COLUMN created_at INTEGER;
ALTER TABLE tags ADD COLUMN write_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN read_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN list_enabled INTEGER NOT NULL DEFAULT 1;

-- A manifest's last-update time moves when it loses a tag (an untag, or the tag pushed onto
-- another manifest): the retention policy counts from when a manifest became untagged.
-- Triggers, so the push path pays nothing unless a tag really moves.
CREATE TRIGGER tags_moved AFTER UPDATE OF digest ON tags WHEN OLD.digest <> NEW.digest
BEGIN
    UPDATE manifests SET updated_at = NEW.updated_at
    WHERE repo_id = OLD.repo_id AND digest = OLD.digest;
END;
CREATE TRIGGER tags_removed AFTER DELETE ON tags
BEGIN
    UPDATE manifests SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE repo_id = OLD.repo_id AND digest = OLD.digest;
END;
