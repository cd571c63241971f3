-- The data directory whose blobs this database uses, when blobs are not in object storage: the
-- id its `wharf-database-binding` file names (see binding.rs). NULL until a node binds one.
ALTER TABLE store_identity ADD COLUMN data_dir_id TEXT;
