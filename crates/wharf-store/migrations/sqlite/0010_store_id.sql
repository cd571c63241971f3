-- The database's identity, written once: an object-storage prefix records the id of the one
-- database whose blobs it holds (`wharf-store-id` under the prefix), so that a second
-- database on the same prefix, or a database pointed at the wrong prefix, is refused at
-- start-up instead of deleting or vouching for content it does not own.
CREATE TABLE store_identity (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    store_id TEXT NOT NULL
);
INSERT INTO store_identity (one, store_id) VALUES (1, lower(hex(randomblob(16))));
