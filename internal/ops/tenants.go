package ops

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

// TenantView is a tenant as the operator commands show it: no secret, the id
// of the key that encrypts it.
type TenantView struct {
	// ID is the tenant's identity: its clientKey, or for a Forge
	// installation without one its installationId.
	ID                       string     `json:"id"`
	Platform                 string     `json:"platform"`
	ClientKey                string     `json:"clientKey"`
	InstallationID           string     `json:"installationId,omitempty"`
	BaseURL                  string     `json:"baseUrl"`
	DisplayURL               string     `json:"displayUrl,omitempty"`
	ProductType              string     `json:"productType"`
	Description              string     `json:"description,omitempty"`
	State                    string     `json:"state"`
	Enabled                  bool       `json:"enabled"`
	License                  string     `json:"license"`
	LicenseCheckedAt         *time.Time `json:"licenseCheckedAt,omitempty"`
	ServerVersion            string     `json:"serverVersion,omitempty"`
	PluginsVersion           string     `json:"pluginsVersion,omitempty"`
	ServiceEntitlementNumber string     `json:"serviceEntitlementNumber,omitempty"`
	EntitlementNumber        string     `json:"entitlementNumber,omitempty"`
	FirstInstalledAt         time.Time  `json:"firstInstalledAt"`
	LastInstalledAt          time.Time  `json:"lastInstalledAt"`
	LastLifecycleAt          time.Time  `json:"lastLifecycleAt"`
	WebhookEndpoints         []string   `json:"webhookEndpoints"`
	WebhookRegisteredAt      *time.Time `json:"webhookRegisteredAt,omitempty"`
	SecretKeyID              string     `json:"secretKeyId"`
}

// Tenant states as the commands name them.
const (
	StateInstalled   = "installed"
	StateUninstalled = "uninstalled"
	StateAll         = "all"
)

func viewOf(t connectrelay.Tenant) TenantView {
	state := StateUninstalled
	if t.Installed {
		state = StateInstalled
	}
	endpoints := t.WebhookEndpoints
	if endpoints == nil {
		endpoints = []string{}
	}
	return TenantView{
		ID: t.ID(), Platform: string(t.Platform), InstallationID: t.InstallationID, ClientKey: t.ClientKey, BaseURL: t.BaseURL, DisplayURL: t.DisplayURL, ProductType: t.ProductType,
		Description: t.Description, State: state, Enabled: t.Enabled, License: string(t.LicenseState),
		LicenseCheckedAt: t.LicenseCheckedAt, ServerVersion: t.ServerVersion, PluginsVersion: t.PluginsVersion,
		ServiceEntitlementNumber: t.ServiceEntitlementNumber, EntitlementNumber: t.EntitlementNumber,
		FirstInstalledAt: t.FirstInstalledAt, LastInstalledAt: t.LastInstalledAt, LastLifecycleAt: t.LastLifecycleAt,
		WebhookEndpoints: endpoints, WebhookRegisteredAt: t.WebhookRegisteredAt, SecretKeyID: t.SecretKeyID,
	}
}

// TenantFilter selects tenants for ListTenants.
type TenantFilter struct {
	// State is StateInstalled, StateUninstalled or StateAll ("" means all).
	State string
	// License is active, inactive, unknown, or "" for any.
	License string
}

// Validate checks the filter; errors wrap ErrInvalidArgument and name the flag.
func (f TenantFilter) Validate() error {
	switch f.State {
	case "", StateAll, StateInstalled, StateUninstalled:
	default:
		return fmt.Errorf("%w: --state must be installed, uninstalled or all, got %q", ErrInvalidArgument, f.State)
	}
	switch connectrelay.LicenseState(f.License) {
	case "", connectrelay.LicenseActive, connectrelay.LicenseInactive, connectrelay.LicenseUnknown:
	default:
		return fmt.Errorf("%w: --license must be active, inactive or unknown, got %q", ErrInvalidArgument, f.License)
	}
	return nil
}

// ListTenants returns every tenant f selects, in clientKey order.
func (d *DB) ListTenants(ctx context.Context, f TenantFilter) ([]TenantView, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	q := tenant.Query{License: connectrelay.LicenseState(f.License), Limit: 1000, IncludeForge: true}
	if f.State == StateInstalled || f.State == StateUninstalled {
		installed := f.State == StateInstalled
		q.Installed = &installed
	}
	out := []TenantView{}
	for {
		page, next, err := d.tenants.Page(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, t := range page {
			out = append(out, viewOf(t))
		}
		if next == "" {
			return out, nil
		}
		q.After = next
	}
}

// BaseURLChange is one change of a tenant's baseUrl (a site rename), from its
// history.
type BaseURLChange struct {
	At   time.Time `json:"at"`
	From string    `json:"from"`
	To   string    `json:"to"`
}

// EventView is one entry of a tenant's history.
type EventView struct {
	ID       int64     `json:"id"`
	Type     string    `json:"type"`
	At       time.Time `json:"at"`
	IssuedAt time.Time `json:"issuedAt,omitzero"`
	Applied  bool      `json:"applied"`
	Changes  []string  `json:"changes"`
}

// LinkView is a site-import link: two clientKeys seen with one baseUrl.
type LinkView struct {
	ClientKey      string    `json:"clientKey"`
	OtherClientKey string    `json:"otherClientKey"`
	BaseURL        string    `json:"baseUrl"`
	DetectedAt     time.Time `json:"detectedAt"`
}

// TenantReport is everything connectctl tenants show prints.
type TenantReport struct {
	Tenant TenantView `json:"tenant"`
	// BaseURLHistory lists the baseUrl changes, oldest first.
	BaseURLHistory []BaseURLChange `json:"baseUrlHistory"`
	// Events are the newest history entries, newest first.
	Events []EventView `json:"events"`
	// SiteImportLinks are the links the tenant takes part in, oldest first.
	SiteImportLinks []LinkView `json:"siteImportLinks"`
	// Transfers are the tenant's newest migration transfers.
	Transfers []TransferView `json:"transfers"`
}

// historyScan is how many history entries ShowTenant reads to find baseUrl
// changes.
const historyScan = 1000

// baseURLNote matches the history note of a baseUrl change (tenant.Store.Install
// writes `baseUrl "old" -> "new"`).
var baseURLNote = regexp.MustCompile(`^baseUrl ("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*")$`)

// ShowTenant reports one tenant with its newest events (events <= 0 means 20).
// Errors wrap ErrNotFound for an unknown clientKey.
func (d *DB) ShowTenant(ctx context.Context, clientKey string, events int) (TenantReport, error) {
	if clientKey == "" {
		return TenantReport{}, fmt.Errorf("%w: CLIENTKEY must not be empty", ErrInvalidArgument)
	}
	if events <= 0 {
		events = 20
	}
	t, err := d.tenants.Get(ctx, clientKey)
	if err != nil {
		return TenantReport{}, notFound(err)
	}
	rep := TenantReport{Tenant: viewOf(t), BaseURLHistory: []BaseURLChange{}, Events: []EventView{},
		SiteImportLinks: []LinkView{}, Transfers: []TransferView{}}
	hist, err := d.tenants.History(ctx, clientKey, historyScan)
	if err != nil {
		return TenantReport{}, notFound(err)
	}
	for i := len(hist) - 1; i >= 0; i-- {
		e := hist[i]
		if !e.Applied {
			continue
		}
		for _, c := range e.Changes {
			m := baseURLNote.FindStringSubmatch(c)
			if m == nil {
				continue
			}
			from, ferr := strconv.Unquote(m[1])
			to, terr := strconv.Unquote(m[2])
			if ferr == nil && terr == nil {
				rep.BaseURLHistory = append(rep.BaseURLHistory, BaseURLChange{At: e.At, From: from, To: to})
			}
		}
	}
	for _, e := range hist[:min(events, len(hist))] {
		changes := e.Changes
		if changes == nil {
			changes = []string{}
		}
		rep.Events = append(rep.Events, EventView{ID: e.ID, Type: e.Type, At: e.At, IssuedAt: e.IssuedAt,
			Applied: e.Applied, Changes: changes})
	}
	// Site-import links and transfers are kept under the Connect clientKey;
	// a Forge installation's transfers under its installationId.
	id := t.ID()
	var links []tenant.Link
	if t.ClientKey != "" {
		if links, err = d.tenants.Links(ctx, t.ClientKey); err != nil {
			return TenantReport{}, notFound(err)
		}
	}
	for _, l := range links {
		rep.SiteImportLinks = append(rep.SiteImportLinks, LinkView(l))
	}
	ts, err := d.transfers.Transfers(ctx, id, 10)
	if err != nil {
		return TenantReport{}, err
	}
	for _, tr := range ts {
		rep.Transfers = append(rep.Transfers, transferView(tr))
	}
	return rep, nil
}
