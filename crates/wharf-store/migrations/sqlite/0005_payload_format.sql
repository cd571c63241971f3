-- Payload formats, per webhook (Wharf's extension): 'acr' (ACR's body, the default),
-- 'eventgrid', 'cloudevents' or 'cloudevents-binary'. Events keep storing ACR's body once;
-- other formats are rendered from it deterministically.
-- A delivery records the format its webhook had when the delivery was written, so every
-- attempt of it, redeliveries included, sends the same bytes even if the webhook's format is
-- changed meanwhile.
ALTER TABLE webhooks ADD COLUMN payload_format TEXT NOT NULL DEFAULT 'acr';
ALTER TABLE deliveries ADD COLUMN payload_format TEXT NOT NULL DEFAULT 'acr';
