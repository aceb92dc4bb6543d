-- The install key environment of each tenant (package tenant, connect.KeyEnvironment).
--
-- Signed installs are verified with a key fetched from the key server of the product's
-- environment, and that environment is chosen by the install body's baseUrl, which is not
-- signed. A tenant's environment never changes, so it is stored with the tenant on its
-- first install, and an install of an existing tenant from another environment is
-- refused: a key served by the staging CDN must never rotate a production tenant's secret
-- or baseUrl.
--
-- Existing rows get the environment of their baseUrl, derived as connect.KeyEnvironment
-- does (host suffix), and 'production' for every other host.
ALTER TABLE tenants ADD COLUMN key_env text NOT NULL DEFAULT 'production'
    CHECK (key_env IN ('production', 'staging', 'fedramp', 'fedramp-staging'));

UPDATE tenants t SET key_env = CASE
        WHEN h.host LIKE '%.jira-dev.com' THEN 'staging'
        WHEN h.host LIKE '%.atlassian-us-gov-mod.net' THEN 'fedramp'
        WHEN h.host LIKE '%.atlassian-stg-fedm.net' THEN 'fedramp-staging'
    END
    FROM (SELECT client_key, lower(substring(base_url FROM '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#:\[\]]+)')) AS host
          FROM tenants) h
    WHERE t.client_key = h.client_key
      AND (h.host LIKE '%.jira-dev.com' OR h.host LIKE '%.atlassian-us-gov-mod.net' OR h.host LIKE '%.atlassian-stg-fedm.net');
