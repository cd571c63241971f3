-- Registry policies (the ARM registry resource's `properties.policies`): the quarantine policy
-- and the retention policy for untagged manifests. One row; the defaults are ACR's.
CREATE TABLE registry_policies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    quarantine_enabled INTEGER NOT NULL DEFAULT 0,
    retention_enabled INTEGER NOT NULL DEFAULT 0,
    retention_days INTEGER NOT NULL DEFAULT 7,
    -- Unix ms of the last change to the retention policy (ARM's lastUpdatedTime); NULL: never.
    retention_updated_at INTEGER
);
INSERT INTO registry_policies (id) VALUES (1);
