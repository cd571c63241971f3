-- Delivery leases are owned by node ids (the `[node] id` setting) and last a small multiple of
-- the delivery timeout, instead of per-process ids leased for an hour. Leases written before
-- belong to process ids that no process will hold again, and would keep their rows for up to
-- an hour: they are cleared. This runs under the data directory's lock, so no process that
-- wrote them is alive.
UPDATE deliveries SET lease_until = NULL, lease_owner = NULL
    WHERE state = 'pending' AND lease_until IS NOT NULL;
