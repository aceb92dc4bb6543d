package lifecycle

import (
	"encoding/json"
	"testing"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"
)

func TestLicenseState_ReducesTheAddonAnswer(t *testing.T) {
	tests := []struct {
		name string
		body string
		want connectrelay.LicenseState
	}{
		{"paid app, active", `{"key":"app","state":"ENABLED","license":{"active":true,"type":"COMMERCIAL"}}`, connectrelay.LicenseActive},
		{"evaluation ended", `{"key":"app","state":"ENABLED","license":{"active":false,"evaluation":true}}`, connectrelay.LicenseInactive},
		{"free app without license", `{"key":"app","version":"1.2.3","state":"ENABLED"}`, connectrelay.LicenseUnknown},
		{"license null", `{"key":"app","license":null}`, connectrelay.LicenseUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var info product.AddonInfo
			if err := json.Unmarshal([]byte(tt.body), &info); err != nil {
				t.Fatal(err)
			}
			if got := licenseState(info); got != tt.want {
				t.Errorf("licenseState = %q, want %q", got, tt.want)
			}
		})
	}
}
