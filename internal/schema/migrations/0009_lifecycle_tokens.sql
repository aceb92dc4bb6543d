-- The replay guard of lifecycle callbacks (package tenant, Delivery). A Connect JWT's
-- qsh covers the method and path, not the body, so a captured, still-valid lifecycle
-- token could be sent again with another body. Each history row of a callback keeps the
-- SHA-256 of the token that carried it and of its body, written in the transaction of
-- the change: a token seen again with the same body is a copy (answered as the first,
-- applied once), with another body a replay (refused, nothing changes). Rows of
-- operator and worker changes carry no token. Only digests are stored, never a token.
ALTER TABLE tenant_events
    ADD COLUMN token_sha256 bytea,
    ADD COLUMN body_sha256  bytea;

CREATE UNIQUE INDEX tenant_events_token_idx ON tenant_events (token_sha256) WHERE token_sha256 IS NOT NULL;
