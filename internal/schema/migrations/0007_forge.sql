-- Forge installations (docs/forge.md). A Forge installation is keyed by its
-- installationId (an installation ARI), which changes on a reinstall; cloudId is
-- the site and survives reinstalls, so it is indexed, and a new installationId
-- on a known cloudId links to the earlier installation (never merged, never
-- deleted automatically). A Connect-on-Forge tenant (a tenants row whose
-- installed carried installationId) is linked through client_key, so that Forge
-- events of that installation report changes of the same tenant.
--
-- The app system token (x-forge-oauth-system) is stored sealed like shared
-- secrets (AES-256-GCM, AAD bound to the installation) with the id of the key
-- that sealed it; no column ever holds it in plaintext.
CREATE TABLE forge_installations (
    installation_id          text PRIMARY KEY,
    app_id                   text NOT NULL,
    environment_type         text NOT NULL,
    environment_id           text NOT NULL DEFAULT '',
    cloud_id                 text NOT NULL DEFAULT '',
    -- The context name of the installation (jira, confluence, ...).
    product                  text NOT NULL DEFAULT '',
    -- The verified app.apiBaseUrl: the only host the system token is sent to.
    api_base_url             text NOT NULL,
    app_version              text NOT NULL DEFAULT '',
    -- The site's URL, learnt by the worker from the product (serverInfo).
    site_url                 text NOT NULL DEFAULT '',
    client_key               text REFERENCES tenants (client_key),
    previous_installation_id text REFERENCES forge_installations (installation_id),

    installed                boolean NOT NULL DEFAULT false,
    installed_at             timestamptz,
    upgraded_at              timestamptz,
    pre_uninstalled_at       timestamptz,
    uninstalled_at           timestamptz,
    -- iat of the latest token whose claims are stored: an older delivery is
    -- recorded but does not put back older claims.
    claims_iat               timestamptz NOT NULL,

    license_state            text NOT NULL DEFAULT 'unknown'
        CHECK (license_state IN ('unknown', 'active', 'inactive')),
    license                  jsonb,

    token_key_id             text,
    token_nonce              bytea,
    token_ciphertext         bytea,
    -- The system token's exp, read unverified (the token is opaque to us);
    -- NULL when it carried none.
    token_expires_at         timestamptz,
    token_received_at        timestamptz,

    first_seen_at            timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT forge_installations_token_sealed CHECK (
        (token_key_id IS NULL) = (token_ciphertext IS NULL) AND (token_nonce IS NULL) = (token_ciphertext IS NULL))
);

CREATE INDEX forge_installations_cloud_id_idx ON forge_installations (cloud_id) WHERE cloud_id <> '';
CREATE INDEX forge_installations_client_key_idx ON forge_installations (client_key) WHERE client_key IS NOT NULL;
CREATE INDEX forge_installations_token_key_id_idx ON forge_installations (token_key_id) WHERE token_key_id IS NOT NULL;
CREATE INDEX tenants_installation_id_idx ON tenants (installation_id) WHERE installation_id <> '';

-- Every Forge delivery received, once: Forge re-sends a delivery with a new
-- token, so the key derives from the event (forge.LifecycleDedupeKey). A copy
-- finds its row and is acknowledged without being applied again.
CREATE TABLE forge_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    installation_id text NOT NULL REFERENCES forge_installations (installation_id),
    type            text NOT NULL,
    dedupe_key      text NOT NULL,
    at              timestamptz NOT NULL,
    issued_at       timestamptz NOT NULL,
    applied         boolean NOT NULL,
    changes         text[] NOT NULL DEFAULT '{}',
    CONSTRAINT forge_events_dedupe UNIQUE (installation_id, dedupe_key)
);
