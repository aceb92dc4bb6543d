package simulator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// forgeTransferOf plans a migration of a fresh installation of r with opts
// and registers it with the simulated platform.
func forgeTransferOf(r *run, opts Options) (*forgeInstallation, migrationPlan, *forgeTransfer) {
	r.opts = opts
	fi := r.newForgeInstallation("")
	p := r.planMigration(fi.data.st, "tr-"+randomHex(4))
	return fi, p, r.s.newForgeTransfer(fi, p)
}

// call sends one request to the simulated Forge migration API and returns
// its status and body.
func call(t *testing.T, s *Simulator, method, rel, auth, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.Origin()+pathForgeMigrationAPI+rel, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return roundTrip(t, req)
}

func TestForgeMigrationAPI_PlaysATransferOnlyForItsInstallation(t *testing.T) {
	r := newForgeRun(t, "http://127.0.0.1:1")
	s := r.s
	fi, p, ft := forgeTransferOf(r, Options{Uploads: 2})
	other, _, otherFT := forgeTransferOf(r, Options{Uploads: 1})
	bearer, otherBearer := "Bearer "+s.issueSystemToken(fi), "Bearer "+s.issueSystemToken(other)
	final := p.uploads[1]
	dataPath := "/data/" + strings.ReplaceAll(final.s3Key, "/", "%2F")

	// The data URL, to the installation's token, is a presigned download
	// served without credentials.
	code, body := call(t, s, http.MethodGet, dataPath, bearer, "")
	var data struct{ URL string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &data) != nil || !strings.HasPrefix(data.URL, s.Origin()+"/s3/"+fi.data.name+"/") {
		t.Fatalf("GET data/{key} = %d %s, want a presigned URL on the simulator", code, body)
	}
	resp, err := http.Get(data.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, data.URL, nil)
	req.Header.Set("Authorization", bearer)
	roundTrip(t, req)
	up := settledUpload(fi.data.st, final.s3Key, 2)
	if resp.StatusCode != http.StatusOK || n != up.size || up.downloads != 2 || up.complete != 2 || up.authorized != 1 {
		t.Errorf("presigned downloads: %d, %d bytes; recorded %+v; want 2 complete downloads, 1 with an Authorization header", resp.StatusCode, n, up)
	}

	// The upload list names this transfer's uploads only.
	code, body = call(t, s, http.MethodGet, "/data/"+ft.id+"/all", bearer, "")
	var list []struct{ Key, Label string }
	_ = json.Unmarshal([]byte(body), &list)
	keys := []string{}
	for _, u := range list {
		keys = append(keys, u.Key+"="+u.Label)
	}
	slices.Sort(keys)
	if want := []string{p.uploads[1].s3Key + "=final", p.uploads[0].s3Key + "=part-1"}; code != http.StatusOK || !slices.Equal(keys, want) {
		t.Errorf("GET data/{transferId}/all = %d %v, want %v", code, keys, want)
	}

	// Statuses and log lines are recorded per message and transfer.
	r.s.markSent(ft, final)
	if code, body := call(t, s, http.MethodPost, "/message/"+ft.id+"/status", bearer,
		`{"status":"SUCCESS","messageIds":["`+final.messageID+`","m-never-sent"]}`); code != http.StatusOK {
		t.Errorf("POST message status = %d %s", code, body)
	}
	if code, _ := call(t, s, http.MethodPost, "/message/"+ft.id+"/status", bearer, `{"status":"DONE","messageIds":["x"]}`); code != http.StatusBadRequest {
		t.Errorf("a status other than SUCCESS or FAILED = %d, want 400", code)
	}
	for _, line := range []string{"IN_PROGRESS 50%: imported 1 of 2 uploads", "SUCCESS 100%: all uploaded data imported"} {
		if code, _ := call(t, s, http.MethodPost, "/log/"+ft.id, bearer, jsonString(map[string]string{"message": line})); code != http.StatusOK {
			t.Errorf("POST log = %d", code)
		}
	}
	v := s.viewTransfer(ft)
	if !slices.Equal(v.statuses[final.messageID], []string{"SUCCESS"}) || !slices.Equal(v.stray, []string{"SUCCESS m-never-sent"}) ||
		!slices.Equal(v.settles(), []string{"SUCCESS 100%: all uploaded data imported"}) {
		t.Errorf("recorded statuses %v, stray %v, settles %v", v.statuses, v.stray, v.settles())
	}

	// Every other token is refused and recorded as such; nothing is answered.
	for _, c := range []struct{ name, method, rel, auth, reason string }{
		{"another installation's token for the data", http.MethodGet, dataPath, otherBearer, "used for transfer " + ft.id},
		{"another installation's token for a status", http.MethodPost, "/message/" + ft.id + "/status", otherBearer, "used for transfer " + ft.id},
		{"a token the simulator never issued", http.MethodGet, "/data/" + ft.id + "/all", "Bearer " + fakeSystemToken(), "not a system token the simulator issued"},
		{"no token", http.MethodPost, "/log/" + ft.id, "", "no Authorization"},
	} {
		before := len(s.forgeCalls(nil))
		code, body := call(t, s, c.method, c.rel, c.auth, `{"status":"FAILED","messageIds":["`+final.messageID+`"],"message":"x"}`)
		calls := s.forgeCalls(nil)
		last := calls[len(calls)-1]
		if code != http.StatusUnauthorized || strings.Contains(body, "url") || len(calls) != before+1 || !strings.Contains(last.Refused, c.reason) || last.Installation != "" {
			t.Errorf("%s: %d %s, recorded %+v; want 401 recorded with a reason containing %q", c.name, code, body, last, c.reason)
		}
	}
	if v := s.viewTransfer(ft); len(v.statuses[final.messageID]) != 1 || len(v.logs) != 2 {
		t.Errorf("a refused call changed the transfer: statuses %v, logs %v", v.statuses, v.logs)
	}
	// The other installation's own transfer still answers to its token.
	if code, _ := call(t, s, http.MethodGet, "/data/"+otherFT.id+"/all", otherBearer, ""); code != http.StatusOK {
		t.Errorf("the other installation's upload list = %d, want 200", code)
	}
	if code, _ := call(t, s, http.MethodGet, "/data/tr-unknown/all", bearer, ""); code != http.StatusNotFound {
		t.Errorf("an unknown transfer = %d, want 404", code)
	}
}

// The events the scenario sends are what the service parses: a verified FIT
// for the migration module, the Forge names, the transfer, key and label,
// and a re-sent copy (a new token, a payload envelope) with the same
// dedupe key.
func TestForgeMigrationEvents_AreTheServicesForgeEvents(t *testing.T) {
	r, app := newFakeForgeApp(t, nil)
	ctx := context.Background()
	fi, p, ft := forgeTransferOf(r, Options{Uploads: 2, Cancel: true})
	wantTypes := map[string]migration.EventType{
		evListenerTriggered: migration.EventListenerTriggered, evUploaded: migration.EventAppDataUploaded,
		evCancellation: migration.EventTransferCancellationRequested, evListenerErrored: migration.EventListenerErrored,
	}
	events := append(slices.Clone(p.events), migrationEvent{typ: evListenerErrored, messageID: "m-err"})
	for _, ev := range events {
		var keys []string
		for retry := range 2 {
			fs := forgeSend{path: appForgeMigration, module: moduleMigration, body: r.forgeMigrationBody(ft, ev, 1700000000000), retry: retry}
			if rep := r.deliverForge(ctx, fi, fs); rep.status != http.StatusNoContent {
				t.Fatalf("%s: %s", ev.typ, rep.text())
			}
			all := app.deliveries()
			d := all[len(all)-1]
			got, err := migration.ParseForgeEvent(d.body)
			if err != nil || d.claims == nil || d.claims.App.Module.Key != moduleMigration || d.claims.App.InstallationID != fi.id {
				t.Fatalf("%s: parse %v, claims %+v", ev.typ, err, d.claims)
			}
			if got.Type != wantTypes[ev.typ] || got.TransferID != ft.id || got.S3Key != ev.s3Key || got.Label != ev.label ||
				got.MessageID != ev.messageID || got.Details.CloudURL != fi.siteURL {
				t.Errorf("%s parsed as %+v", ev.typ, got)
			}
			keys = append(keys, got.DedupeKey())
		}
		if keys[0] != keys[1] {
			t.Errorf("%s: the re-sent copy has dedupe key %s, the first %s", ev.typ, keys[1], keys[0])
		}
	}
	r.opts.NoMessageID = true
	body := r.forgeMigrationBody(ft, p.uploads[0], 1)
	if _, ok := body["messageId"]; ok {
		t.Errorf("--no-message-id body carries a messageId: %v", body)
	}
}

// The status checks fail on every way a worker can get a message wrong.
func TestExpectMessageStatuses_FailOnAMissingDoubleWrongOrStrayStatus(t *testing.T) {
	lt, up := migrationEvent{typ: evListenerTriggered, messageID: "m-lt"}, migrationEvent{typ: evUploaded, s3Key: "k", label: "final", messageID: "m-k"}
	cancel := migrationEvent{typ: evCancellation, messageID: "m-c"}
	cases := []struct {
		name     string
		opts     Options
		events   []migrationEvent
		statuses map[string][]string
		stray    []string
		pass     bool
	}{
		{"each once", Options{}, []migrationEvent{lt, up}, map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"SUCCESS"}}, nil, true},
		{"a missing status", Options{}, []migrationEvent{lt, up}, map[string][]string{"m-lt": {"SUCCESS"}}, nil, false},
		{"a status set twice", Options{}, []migrationEvent{lt, up}, map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"SUCCESS", "SUCCESS"}}, nil, false},
		{"FAILED for an imported upload", Options{}, []migrationEvent{lt, up}, map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"FAILED"}}, nil, false},
		{"a status for a message never sent", Options{}, []migrationEvent{lt, up}, map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"SUCCESS"}}, []string{"SUCCESS m-x"}, false},
		{"cancelled: the upload FAILED", Options{Cancel: true}, []migrationEvent{lt, up, cancel}, map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"FAILED"}}, nil, true},
		{"cancelled: the cancellation acknowledged twice", Options{Cancel: true}, []migrationEvent{lt, up, cancel},
			map[string][]string{"m-lt": {"SUCCESS"}, "m-k": {"FAILED"}, "m-c": {"SUCCESS", "SUCCESS"}}, nil, false},
		{"without messageIds: a status anyway", Options{NoMessageID: true}, []migrationEvent{lt, up}, nil, []string{"SUCCESS m-k"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newForgeRun(t, "http://127.0.0.1:1")
			r.opts = c.opts
			r.expectMessageStatuses(migrationPlan{transferID: "tr", events: c.events}, forgeTransferView{statuses: c.statuses, stray: c.stray})
			if res := r.tl.result(); res.Pass != c.pass {
				t.Errorf("pass = %t, want %t: %s", res.Pass, c.pass, res.Reason)
			}
		})
	}
}
