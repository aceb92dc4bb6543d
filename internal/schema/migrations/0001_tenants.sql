-- Tenants: one row per Atlassian clientKey, the only stable key (DESIGN.md "falsehoods").
-- baseUrl changes on site rename and is shared by two clientKeys after a site import, so it
-- has a NON-unique index only. The shared secret is stored encrypted (AES-256-GCM, AAD =
-- clientKey) with the id of the key that sealed it; no column ever holds it in plaintext.
CREATE TABLE tenants (
    client_key                          text PRIMARY KEY,
    app_key                             text NOT NULL,
    base_url                            text NOT NULL,
    display_url                         text NOT NULL DEFAULT '',
    display_url_servicedesk_help_center text NOT NULL DEFAULT '',
    product_type                        text NOT NULL DEFAULT '',
    description                         text NOT NULL DEFAULT '',
    server_version                      text NOT NULL DEFAULT '',
    plugins_version                     text NOT NULL DEFAULT '',
    service_entitlement_number          text NOT NULL DEFAULT '',
    entitlement_id                      text NOT NULL DEFAULT '',
    entitlement_number                  text NOT NULL DEFAULT '',
    oauth_client_id                     text NOT NULL DEFAULT '',
    installation_id                     text NOT NULL DEFAULT '',
    cloud_id                            text NOT NULL DEFAULT '',
    -- Every body field of installed that is not modelled above (future fields are kept),
    -- never sharedSecret or publicKey.
    extra                               jsonb NOT NULL DEFAULT '{}'::jsonb,

    installed                           boolean NOT NULL,
    enabled                             boolean NOT NULL,
    first_installed_at                  timestamptz NOT NULL,
    last_installed_at                   timestamptz NOT NULL,
    last_lifecycle_at                   timestamptz NOT NULL,
    -- JWT iats ordering out-of-order lifecycle events (older ones are recorded, not
    -- applied): of the installed whose data is stored, of the event that last set
    -- installed (installed/uninstalled), of the event that last set enabled
    -- (installed/enabled/disabled/uninstalled).
    data_iat                            timestamptz NOT NULL,
    installed_iat                       timestamptz NOT NULL,
    enabled_iat                         timestamptz NOT NULL,

    license_state                       text NOT NULL DEFAULT 'unknown'
        CHECK (license_state IN ('unknown', 'active', 'inactive')),
    license_checked_at                  timestamptz,
    webhook_endpoints                   text[] NOT NULL DEFAULT '{}',
    webhook_registered_at               timestamptz,

    secret_key_id                       text NOT NULL,
    secret_nonce                        bytea NOT NULL,
    secret_ciphertext                   bytea NOT NULL,

    created_at                          timestamptz NOT NULL DEFAULT now(),
    updated_at                          timestamptz NOT NULL DEFAULT now(),

    -- A tenant that is not installed cannot be enabled: whatever order disabled and
    -- uninstalled arrive in, the row stays consistent.
    CONSTRAINT tenants_enabled_requires_installed CHECK (installed OR NOT enabled)
);

CREATE INDEX tenants_base_url_idx ON tenants (base_url);
CREATE INDEX tenants_secret_key_id_idx ON tenants (secret_key_id);

-- Lifecycle history: every event received for a tenant, applied or not, with the
-- human-readable changes it made. Never holds secret values.
CREATE TABLE tenant_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_key text NOT NULL REFERENCES tenants (client_key),
    type       text NOT NULL,
    at         timestamptz NOT NULL,
    issued_at  timestamptz,
    applied    boolean NOT NULL,
    changes    text[] NOT NULL DEFAULT '{}'
);

CREATE INDEX tenant_events_client_key_id_idx ON tenant_events (client_key, id DESC);

-- Site imports: a clientKey whose install carried a baseUrl already held by another
-- clientKey. Recorded for operators; neither tenant is merged or deleted.
CREATE TABLE tenant_links (
    client_key       text NOT NULL REFERENCES tenants (client_key),
    other_client_key text NOT NULL REFERENCES tenants (client_key),
    base_url         text NOT NULL,
    detected_at      timestamptz NOT NULL,
    PRIMARY KEY (client_key, other_client_key, base_url)
);

CREATE INDEX tenant_links_other_client_key_idx ON tenant_links (other_client_key);
