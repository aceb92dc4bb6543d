package forge_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

func TestUnwrap_AcceptsBothEnvelopesWithRetryContext(t *testing.T) {
	const ev = `{"eventType":"avi:forge:installed:app","id":"4e874af6-0000-4000-8000-000000000001","context":"ari:cloud:jira::site/c1"}`
	cases := []struct {
		name, body string
		retries    int
	}{
		{"top level", ev, 0},
		{"payload wrapper", `{"payload":` + ev + `}`, 0},
		{"top level retried", `{"eventType":"avi:forge:installed:app","id":"x","retryContext":{"retryCount":2,"retryReason":"TIMEOUT_ERROR"}}`, 2},
		{"wrapper retried inside", `{"payload":{"eventType":"avi:forge:installed:app","id":"x","retryContext":{"retryCount":3,"retryReason":"INVALID_REMOTE_INVOCATION_ERROR"}}}`, 3},
		{"wrapper retried outside", `{"payload":{"eventType":"avi:forge:installed:app","id":"x"},"retryContext":{"retryCount":1}}`, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			event, rc, err := forge.Unwrap([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			e, err := forge.ParseLifecycle(event)
			if err != nil || e.EventType != forge.EventInstalled {
				t.Fatalf("event %s: %+v, %v", event, e, err)
			}
			if rc.RetryCount != tc.retries {
				t.Fatalf("retryCount = %d, want %d", rc.RetryCount, tc.retries)
			}
		})
	}
}

func TestUnwrap_RefusesNonObjects(t *testing.T) {
	for _, body := range []string{``, `null`, `[]`, `"x"`, `{"payload":[1]}`, `{"eventType":"x","retryContext":"no"}`, `{`} {
		if _, _, err := forge.Unwrap([]byte(body)); !errors.Is(err, forge.ErrBody) {
			t.Errorf("Unwrap(%q) = %v, want ErrBody", body, err)
		}
	}
	big := make([]byte, forge.MaxBody+1)
	if _, _, err := forge.Unwrap(big); !errors.Is(err, forge.ErrBody) {
		t.Errorf("oversized body: %v", err)
	}
}

func TestLifecycleDedupeKey_SameEventWithNewTokenGivesOneKey(t *testing.T) {
	f := newFixture(t, nil)
	inst, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	env := forge.EnvironmentARIPrefix + f.iss.AppUUID() + "/" + forgetest.NewUUID()
	claims := func(version string) *forge.Claims {
		c, err := f.v.Verify(context.Background(), bearer(f.mint(t, forgetest.Token{InstallationID: inst, CloudID: cloud, EnvironmentID: env, AppVersion: version})))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first, retry := claims("2.0.0"), claims("2.0.0")
	if first.ID == retry.ID {
		t.Fatal("the two deliveries share a jti; the test needs new tokens")
	}
	k := forge.LifecycleDedupeKey(first, forge.EventInstalled)
	if forge.LifecycleDedupeKey(retry, forge.EventInstalled) != k {
		t.Fatal("a retried delivery with a new token got another key")
	}
	if forge.LifecycleDedupeKey(retry, "") != k {
		t.Fatal("a body without eventType is not treated as installed")
	}
	if forge.LifecycleDedupeKey(retry, forge.EventUpgraded) == k {
		t.Fatal("upgraded shares installed's key")
	}
	if forge.LifecycleDedupeKey(claims("3.0.0"), forge.EventUpgraded) == forge.LifecycleDedupeKey(retry, forge.EventUpgraded) {
		t.Fatal("two upgrades to different versions share a key")
	}

	body, _ := json.Marshal(map[string]any{"id": first.InstallationUUID(), "context": "ari:cloud:jira::site/" + cloud, "app": map[string]any{"id": f.iss.AppUUID()}})
	e, _ := forge.ParseLifecycle(body)
	if m := e.Mismatches(first); len(m) != 0 {
		t.Fatalf("matching body reported mismatches: %v", m)
	}
	e.Context = "ari:cloud:jira::site/" + forgetest.NewCloudID()
	if m := e.Mismatches(first); len(m) != 1 {
		t.Fatalf("foreign context: mismatches %v", m)
	}
}

func FuzzUnwrap(f *testing.F) {
	f.Add([]byte(`{"payload":{"eventType":"avi:forge:installed:app","retryContext":{"retryCount":1}}}`))
	f.Add([]byte(`{"eventType":"avi:ecosystem.migration:uploaded:app_data","key":"k"}`))
	f.Add([]byte(`{"payload":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		event, _, err := forge.Unwrap(body)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(event, &m) != nil || m == nil {
			t.Fatalf("Unwrap returned a non-object %q", event)
		}
	})
}
