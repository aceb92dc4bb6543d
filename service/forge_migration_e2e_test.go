package service_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/service"
)

const (
	e2eInstallation = "ari:cloud:ecosystem::installation/7d1c4e2a-53ae-4a5b-9e7e-03338980abb5"
	e2eSystemToken  = "e2e-forge-system-token-5f7a9c"
)

// forgeAMPSite plays the Forge migration API and its storage: presigned data
// URLs, the upload list, message statuses and the progress log.
type forgeAMPSite struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	data     map[string]string   // key -> content
	statuses map[string][]string // messageId -> statuses, in order
	logs     []string
	badAuth  int
}

func newForgeAMPSite(t *testing.T) *forgeAMPSite {
	s := &forgeAMPSite{t: t, data: map[string]string{}, statuses: map[string][]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *forgeAMPSite) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key, ok := strings.CutPrefix(r.URL.Path, "/storage/"); ok {
		if r.Header.Get("Authorization") != "" {
			s.t.Errorf("the storage got an Authorization header")
		}
		_, _ = io.WriteString(w, s.data[key])
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+e2eSystemToken {
		s.badAuth++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/app/migration/forge/v1/"), "/")
	switch {
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "message":
		var body struct {
			Status     string   `json:"status"`
			MessageIDs []string `json:"messageIds"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		for _, id := range body.MessageIDs {
			s.statuses[id] = append(s.statuses[id], body.Status)
		}
	case r.Method == http.MethodPost && len(parts) == 2 && parts[0] == "log":
		var body struct{ Message string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		s.logs = append(s.logs, body.Message)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "data" && parts[2] == "all":
		list := []map[string]string{}
		for k := range s.data {
			list = append(list, map[string]string{"key": k})
		}
		_ = json.NewEncoder(w).Encode(list)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "data":
		_ = json.NewEncoder(w).Encode(map[string]string{"url": s.srv.URL + "/storage/" + parts[1] + "?X-Amz-Signature=sig"})
	default:
		s.t.Errorf("unexpected Forge call %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	}
}

func (s *forgeAMPSite) snapshot() (map[string][]string, []string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := map[string][]string{}
	for k, v := range s.statuses {
		st[k] = slices.Clone(v)
	}
	return st, slices.Clone(s.logs), s.badAuth
}

// A Forge migration through the receiver's /forge/migration and a worker, the
// system token stored by the receiver from the deliveries' header, with an
// upload before triggered:listener and duplicates (Forge's re-sends carry new
// tokens): every upload imported once, every message acknowledged SUCCESS
// once, settled once, and the system token in no log line.
func TestForge_MigrationThroughTheReceiverAcknowledgesEveryMessageOnce(t *testing.T) {
	t.Parallel()
	site := newForgeAMPSite(t)
	w := newForgeWorld(t)
	e := newE2EWith(t, "", w.configure)
	defer e.startWorker(service.WorkerOptions{})()
	site.mu.Lock()
	site.data["s3/a"], site.data["s3/b"] = "first part", "final part"
	site.mu.Unlock()

	cloud := "d0d52620-3203-4cfa-8db5-f2587155f0dd"
	tok := forgetest.Token{InstallationID: e2eInstallation, CloudID: cloud, APIBaseURL: site.srv.URL + "/ex/jira/" + cloud, ModuleKey: "migration-endpoint"}
	const tid = "9e0c1d2e-1a8b-4b1c-9f0e-5b1f6f0f2c1a"
	details := `"migrationDetails":{"migrationId":"m","migrationScopeId":"s","createdAt":1,"cloudUrl":"https://x.atlassian.net","name":"n"}`
	deliver := func(body string) {
		t.Helper()
		if code := w.deliver(e, handlers.PathForgeMigration, tok, []byte(body), e2eSystemToken); code != http.StatusNoContent {
			t.Fatalf("POST %s = %d", body, code)
		}
	}
	upA := `{"eventType":"avi:ecosystem.migration:uploaded:app_data","transferId":"` + tid + `","key":"s3/a","label":"part","messageId":"m-a",` + details + `}`
	upB := `{"payload":{"eventType":"avi:ecosystem.migration:uploaded:app_data","transferId":"` + tid + `","key":"s3/b","label":"final","messageId":"m-b",` + details + `}}`
	deliver(upA)
	deliver(upA)
	eventually(t, 10*time.Second, "the early upload parked", func() bool {
		var state string
		_ = e.pool.QueryRow(context.Background(), `SELECT state FROM migration_uploads WHERE transfer_id = $1 AND s3_key = 's3/a'`, tid).Scan(&state)
		return state == "parked"
	})
	deliver(`{"eventType":"avi:ecosystem.migration:triggered:listener","transferId":"` + tid + `","messageId":"m-l",` + details + `}`)
	deliver(upB)
	deliver(upB)

	eventually(t, 20*time.Second, "transfer settled", func() bool {
		var settled bool
		_ = e.pool.QueryRow(context.Background(),
			`SELECT state = 'succeeded' AND settled_at IS NOT NULL FROM migration_transfers WHERE transfer_id = $1`, tid).Scan(&settled)
		return settled
	})
	statuses, logs, badAuth := site.snapshot()
	if diff := cmp.Diff(map[string][]string{"m-a": {"SUCCESS"}, "m-l": {"SUCCESS"}, "m-b": {"SUCCESS"}}, statuses); diff != "" {
		t.Errorf("message statuses (-want +got):\n%s", diff)
	}
	var settles int
	for _, l := range logs {
		if strings.HasPrefix(l, "SUCCESS") {
			settles++
		}
	}
	if settles != 1 || badAuth != 0 {
		t.Errorf("%d SUCCESS settle lines (logs %q), %d unauthenticated calls; want 1 and 0", settles, logs, badAuth)
	}
	var imported int
	_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM migration_imported_data WHERE transfer_id = $1 AND client_key = $2`,
		tid, e2eInstallation).Scan(&imported)
	if imported != 2 {
		t.Errorf("%d uploads recorded imported, want 2", imported)
	}
	if strings.Contains(e.logs.String(), e2eSystemToken) {
		t.Error("the system token appears in the logs")
	}
}
