-- Online garbage collection (see gc.rs).
--
-- Which blobs each manifest references (its config and layers, as the manifest parser yields
-- them), written in the manifest push's own transaction. A repository's blob link that no
-- manifest of the repository references, and that has not been used within the grace
-- period, is garbage. Manifests stored before this migration are filled in from their
-- stored bodies right after it (`gc::backfill`, in the migration's transaction).
CREATE TABLE manifest_blobs (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    repo_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (manifest_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifest_blobs_link ON manifest_blobs(repo_id, digest);

-- When the link was last used (uploaded, mounted, read by HEAD or GET), in Unix
-- milliseconds: a push holds on to the blobs it is about to reference through this time.
-- Links that exist already get the migration's time, so they all start a full grace period.
ALTER TABLE repo_blobs ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0;
UPDATE repo_blobs SET used_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);
CREATE INDEX repo_blobs_used ON repo_blobs(used_at);
