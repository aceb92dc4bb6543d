package config

import (
	"slices"
	"testing"
)

// TestLoad_StagingProductHostsAreOptIn: the default CONNECT_PRODUCT_HOSTS
// used to include *.jira-dev.com, Atlassian's staging hosts, whose installs
// are signed by the staging key CDN; a production receiver must not trust
// them unless told to.
func TestLoad_StagingProductHostsAreOptIn(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"*.atlassian.net", "*.jira.com"}; !slices.Equal(c.ProductHosts, want) {
		t.Errorf("default ProductHosts = %q, want %q", c.ProductHosts, want)
	}
	m := minimal()
	m["CONNECT_PRODUCT_HOSTS"] = "*.atlassian.net,*.jira.com,*.jira-dev.com"
	c, err = Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.ProductHosts, "*.jira-dev.com") {
		t.Errorf("opting in: ProductHosts = %q, want *.jira-dev.com among them", c.ProductHosts)
	}
}
