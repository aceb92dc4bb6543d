package product

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
)

// AddonRoute is the Observe/error route of the License REST API call.
const AddonRoute = "/rest/atlassian-connect/1/addons/{appKey}"

// AddonInfo is the product's view of this app on one site (License REST API,
// docs/protocol.md#licensing). Only key, version, state and license.active are documented;
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
// recorded after installed (see internal/lifecycle).
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
