package product

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
)

// AddonRoute is the Observe/error route of the License REST API call.
const AddonRoute = "/rest/atlassian-connect/1/addons/{appKey}"

// License states recorded on a tenant. They are deliberately coarse: the
// License API is known to return stale data (MC-1001), and installed != licensed.
const (
	// LicenseActive means the product reported license.active = true.
	LicenseActive = "active"
	// LicenseInactive means the product reported a license that is not active.
	LicenseInactive = "inactive"
	// LicenseUnknown means the answer had no license object: a free app, an
	// app without "enableLicensing", or an answer we cannot interpret. It must
	// never be treated as inactive (that would lock out free-app customers).
	LicenseUnknown = "unknown"
)

// AddonInfo is the product's view of this app on one site (License REST API,
// PROTOCOL §4). Only key, version, state and license.active are documented;
// the other license fields are read when present, and Raw keeps the whole
// answer so that nothing the product adds later is lost.
type AddonInfo struct {
	Key     string   `json:"key"`
	Version string   `json:"version"`
	State   string   `json:"state"`
	License *License `json:"license,omitempty"`
	// Raw is the response body as received.
	Raw json.RawMessage `json:"-"`
}

// License is the license object of AddonInfo; absent for free apps.
type License struct {
	Active                   bool   `json:"active"`
	Type                     string `json:"type,omitempty"`
	Evaluation               bool   `json:"evaluation,omitempty"`
	SupportEntitlementNumber string `json:"supportEntitlementNumber,omitempty"`
	EntitlementID            string `json:"entitlementId,omitempty"`
}

// Addon asks the tenant's product how it sees this app, for the license state
// recorded after installed (DESIGN "Worker effects").
func (c *Client) Addon(ctx context.Context, clientKey string) (AddonInfo, error) {
	var raw json.RawMessage
	req := Request{Path: "/rest/atlassian-connect/1/addons/" + url.PathEscape(c.cfg.AppKey), Route: AddonRoute}
	if err := c.Do(ctx, clientKey, req, &raw); err != nil {
		return AddonInfo{}, fmt.Errorf("addon info for %s: %w", clientKey, err)
	}
	var info AddonInfo
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &info); err != nil {
			return AddonInfo{}, fmt.Errorf("addon info for %s: decode: %w", clientKey, err)
		}
	}
	info.Raw = raw
	return info, nil
}

// LicenseState reduces AddonInfo to the coarse state stored on a tenant:
// LicenseActive, LicenseInactive or LicenseUnknown.
func LicenseState(info AddonInfo) string {
	switch {
	case info.License == nil:
		return LicenseUnknown
	case info.License.Active:
		return LicenseActive
	default:
		return LicenseInactive
	}
}
