package connectrelay

import (
	"encoding/json"
	"time"
)

// HostInfo is what a product says about itself and the installation in an
// installed callback, with the installed body's JSON names; no field is a
// secret.
type HostInfo struct {
	// ClientKey (clientKey) identifies the Connect tenant. It never changes for
	// a tenant; a site import or restore produces a new one.
	ClientKey string `json:"clientKey"`
	// AppKey (key) is the app key the product installed.
	AppKey string `json:"key"`
	// BaseURL (baseUrl) is where the product's REST API is called. It changes
	// on a site rename and is not unique across tenants.
	BaseURL string `json:"baseUrl"`
	// DisplayURL (displayUrl) is the custom domain for user-facing links, if any.
	DisplayURL string `json:"displayUrl,omitempty"`
	// DisplayURLServicedeskHelpCenter (displayUrlServicedeskHelpCenter).
	DisplayURLServicedeskHelpCenter string `json:"displayUrlServicedeskHelpCenter,omitempty"`
	// ProductType (productType) is "jira" or "confluence".
	ProductType string `json:"productType"`
	// Description (description) is the product's description of the site.
	Description string `json:"description,omitempty"`
	// ServerVersion (serverVersion) is the product build.
	ServerVersion string `json:"serverVersion,omitempty"`
	// PluginsVersion (pluginsVersion) is the Connect version that installed
	// the app; not every tenant runs the latest descriptor.
	PluginsVersion string `json:"pluginsVersion,omitempty"`
	// ServiceEntitlementNumber (serviceEntitlementNumber) is the legacy SEN.
	ServiceEntitlementNumber string `json:"serviceEntitlementNumber,omitempty"`
	// EntitlementID (entitlementId) is the commerce entitlement id.
	EntitlementID string `json:"entitlementId,omitempty"`
	// EntitlementNumber (entitlementNumber) is the commerce entitlement number.
	EntitlementNumber string `json:"entitlementNumber,omitempty"`
	// OAuthClientID (oauthClientId) is used for OAuth 2.0 JWT-bearer
	// impersonation.
	OAuthClientID string `json:"oauthClientId,omitempty"`
	// InstallationID (installationId) is the Forge installation ARI of a
	// Connect-on-Forge app; empty for a plain Connect app.
	InstallationID string `json:"installationId,omitempty"`
	// CloudID (cloudId) is the site's cloud id, when the product sends it.
	CloudID string `json:"cloudId,omitempty"`
	// Extra holds every field of the installed body not modelled above, as a
	// JSON object, so that fields Atlassian adds later are not lost. It never
	// holds sharedSecret or publicKey.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// LicenseState is the coarse license state recorded on a tenant.
type LicenseState string

// License states. The License REST API is known to answer stale data, and
// installed is not licensed, so the states are deliberately coarse.
const (
	// LicenseUnknown: never checked, or the answer had no license (a free app,
	// an app without licensing). It must never be treated as inactive.
	LicenseUnknown LicenseState = "unknown"
	// LicenseActive: the product reported an active license.
	LicenseActive LicenseState = "active"
	// LicenseInactive: the product reported a license that is not active.
	LicenseInactive LicenseState = "inactive"
)

// Tenant is one installation of the app as this service stores it. Its JSON
// form (what the internal API answers and forwarded events carry) holds the
// public fields only. It never carries the shared secret: calls to the tenant's product go through
// [product.Client], which reads the secret itself.
type Tenant struct {
	HostInfo
	// Platform says how the app reaches the tenant: PlatformConnect,
	// PlatformConnectOnForge (a Connect installed carried installationId) or
	// PlatformForge (known from Forge events only; ClientKey is empty and
	// ID() is the installationId).
	Platform Platform `json:"platform"`
	// Forge is the tenant's Forge installation, for PlatformForge and for a
	// PlatformConnectOnForge tenant once a Forge event of its installation
	// arrived; nil otherwise.
	Forge *ForgeInstallation `json:"forge,omitempty"`
	// Installed is false after an applied uninstalled. The tenant and its
	// secret are kept: Atlassian may install again, and an uninstall can be
	// missed or be a mistake.
	Installed bool `json:"installed"`
	// Enabled follows enabled and disabled. Connect-on-Forge apps no longer
	// receive them, so nothing should depend on Enabled alone.
	Enabled bool `json:"enabled"`
	// FirstInstalledAt is when the tenant was first installed.
	FirstInstalledAt time.Time `json:"firstInstalledAt"`
	// LastInstalledAt is when the last applied installed was received.
	LastInstalledAt time.Time `json:"lastInstalledAt"`
	// LastLifecycleAt is when the latest lifecycle event, applied or not, was
	// received.
	LastLifecycleAt time.Time `json:"lastLifecycleAt"`
	// DataIssuedAt is the JWT iat of the installed whose data (secret, baseUrl,
	// versions) is stored: an installed with an older iat is recorded in the
	// history but not applied, so a delayed retry cannot restore a secret
	// Atlassian has rotated since.
	DataIssuedAt time.Time `json:"-"`
	// InstalledIssuedAt is the JWT iat of the event that last set Installed.
	InstalledIssuedAt time.Time `json:"-"`
	// EnabledIssuedAt is the JWT iat of the event that last set Enabled.
	EnabledIssuedAt time.Time `json:"-"`
	// LicenseState is LicenseUnknown until the worker reads the License REST API.
	LicenseState LicenseState `json:"license"`
	// LicenseCheckedAt is when LicenseState was last checked; nil if never.
	LicenseCheckedAt *time.Time `json:"licenseCheckedAt,omitempty"`
	// WebhookEndpoints are the migration webhook endpoints the worker last
	// registered; empty if never.
	WebhookEndpoints []string `json:"-"`
	// WebhookRegisteredAt is when WebhookEndpoints were registered; nil if never.
	WebhookRegisteredAt *time.Time `json:"-"`
	// SecretKeyID names the key that encrypts the stored secret at rest, so an
	// operator can see which tenants still need re-encryption after a key
	// rotation.
	SecretKeyID string `json:"-"`
}

// Platform is how the app reaches a tenant.
type Platform string

// Platforms.
const (
	// PlatformConnect: a Connect app, known by its clientKey.
	PlatformConnect Platform = "connect"
	// PlatformConnectOnForge: Connect modules in a Forge manifest. The tenant
	// is known by its clientKey and linked to its Forge installation; enabled
	// and disabled no longer arrive, and installed not on automatic updates.
	PlatformConnectOnForge Platform = "connect-on-forge"
	// PlatformForge: a Forge app with a remote, known by its installationId.
	PlatformForge Platform = "forge"
)

// ForgeInstallation is a Forge installation as this service stores it, taken
// from verified Forge Invocation Tokens. It never carries the app system
// token.
type ForgeInstallation struct {
	// InstallationID is the installation ARI
	// (ari:cloud:ecosystem::installation/<uuid>). A reinstall gets a new one.
	InstallationID string `json:"installationId"`
	// AppID is the app ARI.
	AppID string `json:"appId"`
	// EnvironmentType is PRODUCTION, STAGING or DEVELOPMENT.
	EnvironmentType string `json:"environmentType"`
	// EnvironmentID is the environment ARI.
	EnvironmentID string `json:"environmentId,omitempty"`
	// CloudID is the site's cloud id, stable across reinstalls.
	CloudID string `json:"cloudId,omitempty"`
	// Product is the installation context's name ("jira", "confluence").
	Product string `json:"product,omitempty"`
	// APIBaseURL is where the app calls the product as this installation
	// (not the site's URL).
	APIBaseURL string `json:"apiBaseUrl"`
	// AppVersion is the installed app version, when the token carried it.
	AppVersion string `json:"appVersion,omitempty"`
	// SiteURL is the site's URL, learnt from the product after install; empty
	// until then.
	SiteURL string `json:"siteUrl,omitempty"`
	// ClientKey is the Connect tenant of a Connect-on-Forge installation.
	ClientKey string `json:"clientKey,omitempty"`
	// PreviousInstallationID is the earlier installation on the same cloudId,
	// when this one is a reinstall. The two are never merged.
	PreviousInstallationID string `json:"previousInstallationId,omitempty"`
	// Installed is true after an installed and false after an uninstalled.
	// A pre-uninstall does not clear it: Forge may still call the app.
	Installed bool `json:"installed"`
	// InstalledAt, UpgradedAt, PreUninstalledAt and UninstalledAt are when
	// the last event of each kind was received; nil if never.
	InstalledAt      *time.Time `json:"installedAt,omitempty"`
	UpgradedAt       *time.Time `json:"upgradedAt,omitempty"`
	PreUninstalledAt *time.Time `json:"preUninstalledAt,omitempty"`
	UninstalledAt    *time.Time `json:"uninstalledAt,omitempty"`
	// License is the token's app.license as received (no secret in it).
	License json.RawMessage `json:"license,omitempty"`
	// SystemTokenExpiresAt is when the stored app system token expires; nil
	// when none is stored or its expiry is unknown.
	SystemTokenExpiresAt *time.Time `json:"systemTokenExpiresAt,omitempty"`
}

// ID returns the identifier this service knows the tenant by, which is what
// [product.Client.Do] takes: the Connect clientKey. A Forge installation that
// has no clientKey is known by its installationId.
func (t Tenant) ID() string {
	if t.ClientKey != "" {
		return t.ClientKey
	}
	return t.InstallationID
}
