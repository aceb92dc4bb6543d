package forge

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// Claims are the verified claims of a Forge Invocation Token. Only a
// Verifier returns them, after every check passed; tenant identity must be
// taken from here, never from the request body.
type Claims struct {
	// ID is the jti claim.
	ID string
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp.
	IssuedAt, NotBefore, ExpiresAt time.Time
	// App is the app claim.
	App App
	// Context is the FIT's "context" member verbatim; nil when absent.
	Context json.RawMessage
}

// App is the "app" claim of a FIT. Unknown members are ignored.
type App struct {
	// ID is the app ARI, equal to aud.
	ID string `json:"id"`
	// InstallationID is the installation ARI, the key of remote storage; it
	// changes on reinstall.
	InstallationID string `json:"installationId"`
	// APIBaseURL is the base URL for product API calls, e.g.
	// https://api.atlassian.com/ex/jira/<cloudId>.
	APIBaseURL string `json:"apiBaseUrl"`
	// AppVersion is the installed app version (app.version is deprecated
	// and not read).
	AppVersion string `json:"appVersion"`
	// Installation is app.installation.
	Installation Installation `json:"installation"`
	// Environment is app.environment.
	Environment Environment `json:"environment"`
	// Module is app.module, the invoked module.
	Module Module `json:"module"`
	// License is app.license; nil when the token has none (free apps,
	// non-production environments).
	License *License `json:"license,omitempty"`
}

// Installation is app.installation: the installation ARI and its contexts.
type Installation struct {
	ID       string                `json:"id"`
	Contexts []InstallationContext `json:"contexts"`
}

// InstallationContext is one member of app.installation.contexts.
type InstallationContext struct {
	Name        string `json:"name"`
	APIBaseURL  string `json:"apiBaseUrl"`
	CloudID     string `json:"cloudId,omitempty"`
	WorkspaceID string `json:"workspaceId,omitempty"`
}

// Environment is app.environment: type DEVELOPMENT, STAGING or PRODUCTION
// and the environment ARI.
type Environment struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Module is app.module: its type (core:endpoint for remote invocations) and
// key.
type Module struct {
	Type string `json:"type"`
	Key  string `json:"key"`
}

// License is app.license, present for paid production Marketplace apps.
// Members not listed are ignored.
type License struct {
	// Active is the current license state.
	Active *bool `json:"active,omitempty"`
	// IsActive is the deprecated predecessor of Active.
	IsActive            *bool  `json:"isActive,omitempty"`
	Type                string `json:"type,omitempty"`
	BillingPeriod       string `json:"billingPeriod,omitempty"`
	SubscriptionEndDate string `json:"subscriptionEndDate,omitempty"`
	TrialEndDate        string `json:"trialEndDate,omitempty"`
	IsEvaluation        *bool  `json:"isEvaluation,omitempty"`
}

// State reports whether the license is active, and whether that is known:
// Active is preferred, the deprecated IsActive is the fallback, and known is
// false when neither is present or l is nil.
func (l *License) State() (active, known bool) {
	switch {
	case l == nil:
		return false, false
	case l.Active != nil:
		return *l.Active, true
	case l.IsActive != nil:
		return *l.IsActive, true
	default:
		return false, false
	}
}

// CloudID returns the cloudId of the first installation context that has
// one, else the last path segment of app.apiBaseUrl when its path is
// /ex/<product>/<uuid>, else "".
func (c *Claims) CloudID() string {
	for _, ic := range c.App.Installation.Contexts {
		if ic.CloudID != "" {
			return ic.CloudID
		}
	}
	u, err := url.Parse(c.App.APIBaseURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) == 3 && parts[0] == "ex" && parts[1] != "" && IsUUID(parts[2]) {
		return parts[2]
	}
	return ""
}

// InstallationUUID returns the UUID suffix of App.InstallationID ("" when it
// is not an installation ARI, which a verified token never has).
func (c *Claims) InstallationUUID() string {
	if !IsInstallationID(c.App.InstallationID) {
		return ""
	}
	return strings.TrimPrefix(c.App.InstallationID, InstallationARIPrefix)
}

// AppUUID returns the UUID suffix of App.ID.
func (c *Claims) AppUUID() string {
	return strings.TrimPrefix(c.App.ID, AppARIPrefix)
}
