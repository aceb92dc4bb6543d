package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/service"
)

// ampSite plays the product's App Migration Platform API and the storage behind
// presigned URLs.
type ampSite struct {
	*site
	s3       *httptest.Server
	mu       sync.Mutex
	data     map[string][]byte // s3Key -> content
	dataGets map[string]int    // s3Key -> presigned downloads
	progress []string          // status/percent of each progress call
	gone     map[string]bool   // s3Keys whose data URL answers 404
	t        *testing.T
}

func newAMPSite(t *testing.T) *ampSite {
	a := &ampSite{site: newSite(), data: map[string][]byte{}, dataGets: map[string]int{}, gone: map[string]bool{}, t: t}
	a.s3 = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("presigned download carried an Authorization header")
		}
		key := strings.TrimPrefix(r.URL.Path, "/obj/")
		a.mu.Lock()
		b, ok := a.data[key]
		a.dataGets[key]++
		a.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(a.s3.Close)
	return a
}

func (a *ampSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/rest/atlassian-connect/1/migration/"
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, prefix+"data/") && strings.HasSuffix(p, "/all") && r.Method == http.MethodGet:
		// Everything the product holds for the transfer (these tests use one
		// transfer per site).
		a.mu.Lock()
		list := []map[string]string{}
		for key := range a.data {
			list = append(list, map[string]string{"s3Key": key, "label": ""})
		}
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	case strings.HasPrefix(p, prefix+"data/") && r.Method == http.MethodGet:
		key := strings.TrimPrefix(p, prefix+"data/")
		w.Header().Set("Content-Type", "application/json")
		a.mu.Lock()
		gone := a.gone[key]
		a.mu.Unlock()
		if gone {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"message":"no data for this key"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"url": a.s3.URL + "/obj/" + key})
	case strings.HasPrefix(p, prefix+"progress/") && r.Method == http.MethodPost:
		var body struct {
			Status  string `json:"status"`
			Percent int    `json:"percent"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		a.mu.Lock()
		a.progress = append(a.progress, fmt.Sprintf("%s/%d", body.Status, body.Percent))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	case strings.HasPrefix(p, prefix+"error/") && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"exceptionType":"java.lang.IllegalStateException","safeStackTrace":"at Listener.run"}`)
	default:
		a.site.ServeHTTP(w, r)
	}
}

func (a *ampSite) statuses() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.progress...)
}

func (a *ampSite) gets(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dataGets[key]
}

func ampEvent(eventType, transferID, messageID, clientKey, s3Key, label string) map[string]any {
	ev := map[string]any{
		"eventType": eventType, "cloudAppKey": appKey, "transferId": transferID,
		"migrationDetails": map[string]any{
			"migrationId": "mig-" + transferID, "migrationScopeId": "scope-1", "name": "e2e migration",
			"createdAt": 1702530783417, "jiraClientKey": clientKey, "confluenceClientKey": "unknown",
		},
	}
	if messageID != "" {
		ev["messageId"] = messageID
	}
	if s3Key != "" {
		ev["s3Key"], ev["label"] = s3Key, label
	}
	return ev
}

func TestMigration_UploadBeforeListenerTriggeredIsImportedOnceAndSettlesSuccess(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-amp-0123456789abcdef"
	amp := newAMPSite(t)
	amp.data["k1"] = bytes.Repeat([]byte("first part "), 1000)
	amp.data["k2"] = []byte("the final part")
	prod := newProduct(t, secret, amp)
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})

	send := func(ev map[string]any) {
		t.Helper()
		if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d, want 200", ev["eventType"], code)
		}
	}
	// The upload arrives before listener-triggered, and is re-sent.
	send(ampEvent("app-data-uploaded", "tr-1", "m-up-1", "ck-1", "k1", "part-1"))
	send(ampEvent("app-data-uploaded", "tr-1", "m-up-1", "ck-1", "k1", "part-1"))
	eventually(t, 5*time.Second, "upload parked", func() bool {
		var state string
		_ = e.pool.QueryRow(context.Background(), `SELECT state FROM migration_uploads WHERE s3_key = 'k1'`).Scan(&state)
		return state == "parked"
	})
	if n := amp.gets("k1"); n != 0 {
		t.Fatalf("parked upload was downloaded %d times before listener-triggered", n)
	}
	// listener-triggered three times (duplicates), then the final upload.
	for range 3 {
		send(ampEvent("listener-triggered", "tr-1", "m-lt-1", "ck-1", "", ""))
	}
	send(ampEvent("app-data-uploaded", "tr-1", "", "ck-1", "k2", "final"))
	send(ampEvent("app-data-uploaded", "tr-1", "", "ck-1", "k2", "final"))

	e.waitSettledSuccess("tr-1", amp, 10*time.Second)
	for key, content := range amp.data {
		var size int64
		var sum string
		err := e.pool.QueryRow(context.Background(), `SELECT size_bytes, sha256 FROM migration_imported_data WHERE transfer_id = 'tr-1' AND s3_key = $1`, key).Scan(&size, &sum)
		want := sha256.Sum256(content)
		if err != nil || size != int64(len(content)) || sum != hex.EncodeToString(want[:]) {
			t.Errorf("imported record of %s = %d %s (%v), want %d %x", key, size, sum, err, len(content), want)
		}
		if n := amp.gets(key); n != 1 {
			t.Errorf("%s downloaded %d times, want exactly 1", key, n)
		}
	}
	success := 0
	for _, s := range amp.statuses() {
		if strings.HasPrefix(s, "SUCCESS") {
			success++
		}
	}
	if success != 1 {
		t.Errorf("progress calls %v: SUCCESS reported %d times, want 1", amp.statuses(), success)
	}
}

func TestMigration_ListenerErroredSettlesFailedWithTheErrorRecorded(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-amp-err-0123456789ab"
	amp := newAMPSite(t)
	prod := newProduct(t, secret, amp)
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ampEvent("listener-errored", "tr-9", "m-err", "ck-1", "", "")); code != http.StatusOK {
		t.Fatalf("listener-errored = %d", code)
	}
	eventually(t, 10*time.Second, "transfer failed", func() bool {
		var state, details string
		_ = e.pool.QueryRow(context.Background(), `SELECT state, coalesce(error_details::text, '') FROM migration_transfers WHERE transfer_id = 'tr-9'`).Scan(&state, &details)
		return state == "failed" && strings.Contains(details, "IllegalStateException")
	})
	eventually(t, 5*time.Second, "FAILED reported", func() bool {
		for _, s := range amp.statuses() {
			if strings.HasPrefix(s, "FAILED") {
				return true
			}
		}
		return false
	})
}

func TestMigration_UnknownEventTypeIsAcknowledgedAndRecordedOnce(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-amp-new-0123456789ab"
	prod := newProduct(t, secret, newAMPSite(t))
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	ev := map[string]any{"eventType": "transfer-paused", "messageId": "m-new", "reason": "a future platform feature"}
	for range 3 {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
			t.Fatalf("unknown event = %d, want 200", code)
		}
	}
	eventually(t, 5*time.Second, "unknown event recorded for operators", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM migration_events WHERE NOT known AND event_type = 'transfer-paused' AND client_key = 'ck-1'`).Scan(&n)
		return n == 1
	})
	eventually(t, 5*time.Second, "task completed, not retried", func() bool {
		info, err := e.inspector.GetQueueInfo("migration")
		return err == nil && info.Completed == 1 && info.Retry == 0 && info.Archived == 0
	})
}

// A typical failed import, as the worker logs it: the product no longer has the
// upload's data. Each identifier appears once in the error, the layer that
// received it naming it; the task fails permanently and so does the transfer.
func TestMigration_FailedImportIsLoggedNamingEachIdentifierOnce(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-amp-gone-0123456789a"
	amp := newAMPSite(t)
	amp.gone["gone/k1"] = true
	prod := newProduct(t, secret, amp)
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	for _, ev := range []map[string]any{
		ampEvent("listener-triggered", "tr-gone", "m-lt", "ck-1", "", ""),
		ampEvent("app-data-uploaded", "tr-gone", "m-up", "ck-1", "gone/k1", "final"),
	} {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d", ev["eventType"], code)
		}
	}
	var logged string
	eventually(t, 10*time.Second, "the failed import logged", func() bool {
		for _, line := range e.logs.Lines() {
			var rec struct {
				Msg      string `json:"msg"`
				TaskType string `json:"task_type"`
				Error    string `json:"error"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			if rec.Msg == "task failed" && rec.TaskType == "migration:import" {
				logged = rec.Error
				return true
			}
		}
		return false
	})
	want := `migration: transfer tr-gone (attempt 1): data URL of upload "gone/k1": ` +
		`product: GET /rest/atlassian-connect/1/migration/data/{s3Key}: 404 Not Found: "{\"message\":\"no data for this key\"}"` +
		` (not retried: skip retry for the task)`
	if logged != want {
		t.Errorf("logged error:\n got %s\nwant %s", logged, want)
	}
	eventually(t, 5*time.Second, "transfer failed with the upload", func() bool {
		var state, msg string
		_ = e.pool.QueryRow(context.Background(), `SELECT state, coalesce(settle_message, '') FROM migration_transfers WHERE transfer_id = 'tr-gone'`).Scan(&state, &msg)
		return state == "failed" && strings.Contains(msg, "gone/k1")
	})
}
