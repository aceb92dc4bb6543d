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

// ID returns the identifier this service knows the tenant by, which is what
// [product.Client.Do] takes: the Connect clientKey. A Forge installation that
// has no clientKey is known by its installationId.
func (t Tenant) ID() string {
	if t.ClientKey != "" {
		return t.ClientKey
	}
	return t.InstallationID
}
