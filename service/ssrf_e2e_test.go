package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/service"
)

// dataURLSite is an ampSite whose data API answers chosen URLs per s3Key.
type dataURLSite struct {
	*ampSite
	urls map[string]string
}

func (d *dataURLSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/rest/atlassian-connect/1/migration/data/"
	if key, ok := strings.CutPrefix(r.URL.Path, prefix); ok && r.Method == http.MethodGet {
		if u, ok := d.urls[key]; ok {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"url": u})
			return
		}
	}
	d.ampSite.ServeHTTP(w, r)
}

// Through a running worker: a data URL pointing at the cloud metadata address,
// and one whose storage redirects to a private address, are refused before
// any connection; the uploads fail with a clear error, are not retried, and
// the transfer settles FAILED.
func TestMigration_DataURLsInsideTheNetworkAreRefused(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-ssrf-0123456789abcd"
	// Storage on loopback (allowed: CONNECT_PRODUCT_HOSTS lists 127.0.0.1, as in
	// local development) that redirects inside the network.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://10.0.0.1/internal/admin?X-Amz-Signature=SIG-RD", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	site := &dataURLSite{ampSite: newAMPSite(t), urls: map[string]string{
		"meta/k1":     "https://169.254.169.254/latest/meta-data/iam/security-credentials/?X-Amz-Signature=SIG-MD",
		"redirect/k2": redirector.URL + "/obj/k2?X-Amz-Signature=SIG-OK",
	}}
	prod := newProduct(t, secret, site)
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	for _, tc := range []struct{ transfer, s3Key string }{{"tr-md", "meta/k1"}, {"tr-rd", "redirect/k2"}} {
		for _, ev := range []map[string]any{
			ampEvent("listener-triggered", tc.transfer, "m-lt-"+tc.transfer, "ck-1", "", ""),
			ampEvent("app-data-uploaded", tc.transfer, "m-up-"+tc.transfer, "ck-1", tc.s3Key, "final"),
		} {
			if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
				t.Fatalf("%s = %d", ev["eventType"], code)
			}
		}
	}
	for _, tc := range []struct{ transfer, s3Key, want string }{
		{"tr-md", "meta/k1", "169.254.169.254 is link-local"},
		{"tr-rd", "redirect/k2", "10.0.0.1 is private"},
	} {
		eventually(t, 10*time.Second, tc.s3Key+" failed and its transfer settled FAILED", func() bool {
			var upload, lastErr, transfer string
			_ = e.pool.QueryRow(context.Background(), `SELECT u.state, coalesce(u.last_error, ''), t.state FROM migration_uploads u
				JOIN migration_transfers t USING (transfer_id) WHERE u.s3_key = $1`, tc.s3Key).Scan(&upload, &lastErr, &transfer)
			if upload == "failed" && !strings.Contains(lastErr, tc.want) {
				t.Fatalf("%s failed with %q, want it to say %q", tc.s3Key, lastErr, tc.want)
			}
			if strings.Contains(lastErr, "SIG-") {
				t.Fatalf("%s: the error leaks the presigned query: %q", tc.s3Key, lastErr)
			}
			return upload == "failed" && transfer == "failed"
		})
	}
	info, err := e.inspector.GetQueueInfo("migration")
	if err != nil {
		t.Fatal(err)
	}
	if info.Retry != 0 {
		t.Errorf("%d migration tasks scheduled for retry; a refused address is final", info.Retry)
	}
}
