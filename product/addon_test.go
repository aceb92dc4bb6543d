package product

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestAddon(t *testing.T) {
	tests := []struct {
		name string
		body string
		want AddonInfo
	}{
		{
			name: "paid app, active",
			body: `{"key":"` + testAppKey + `","version":"1.2.3","state":"ENABLED","host":{"product":"Confluence"},
				"license":{"active":true,"type":"COMMERCIAL","evaluation":false,"supportEntitlementNumber":"SEN-123","entitlementId":"e-1"}}`,
			want: AddonInfo{Key: testAppKey, Version: "1.2.3", State: "ENABLED", License: &License{
				Active: true, Type: "COMMERCIAL", SupportEntitlementNumber: "SEN-123", EntitlementID: "e-1"}},
		},
		{
			name: "evaluation ended",
			body: `{"key":"` + testAppKey + `","version":"1.2.3","state":"ENABLED","license":{"active":false,"evaluation":true}}`,
			want: AddonInfo{Key: testAppKey, Version: "1.2.3", State: "ENABLED", License: &License{Evaluation: true}},
		},
		{
			name: "free app without license",
			body: `{"key":"` + testAppKey + `","version":"1.2.3","state":"ENABLED"}`,
			want: AddonInfo{Key: testAppKey, Version: "1.2.3", State: "ENABLED"},
		},
		{
			name: "license null",
			body: `{"key":"` + testAppKey + `","license":null}`,
			want: AddonInfo{Key: testAppKey},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setup(t, "/wiki", nil)
			b.product.SetHandler(jsonHandler(http.StatusOK, tt.body))
			got, err := c.Addon(t.Context(), testClientKey)
			if err != nil {
				t.Fatalf("Addon: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(AddonInfo{}, "Raw")); diff != "" {
				t.Errorf("AddonInfo (-want +got):\n%s", diff)
			}
			if string(got.Raw) != tt.body {
				t.Errorf("Raw = %s, want the body as received", got.Raw)
			}
			reqs := b.product.Requests()
			if len(reqs) != 1 || reqs[0].Method != http.MethodGet || reqs[0].Path != "/wiki/rest/atlassian-connect/1/addons/"+testAppKey {
				t.Errorf("requests = %+v", reqs)
			}
			if obs := b.observer.All(); len(obs) != 1 || obs[0].Route != AddonRoute {
				t.Errorf("observations = %+v, want one with route %s", obs, AddonRoute)
			}
		})
	}
}

func TestAddonNotInstalled(t *testing.T) {
	c, b := setup(t, "", nil)
	b.product.SetHandler(jsonHandler(http.StatusNotFound, `{"message":"no such app"}`))
	if _, err := c.Addon(t.Context(), testClientKey); !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
}
