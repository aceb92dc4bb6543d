package simulator

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Migration event types the platform sends.
const (
	evListenerTriggered = "listener-triggered"
	evUploaded          = "app-data-uploaded"
	evListenerErrored   = "listener-errored"
	evCancellation      = "transfer-cancellation-requested"
)

// Settle statuses of the progress API.
const (
	settleSuccess    = "SUCCESS"
	settleFailed     = "FAILED"
	settleIncomplete = "INCOMPLETE"
)

// smallUpload is the size of each generated upload that is not --big.
const smallUpload = 256 << 10

// migrationEvent is one event the platform sends for the transfer.
type migrationEvent struct {
	typ, s3Key, label, messageID string
}

func (r *run) eventBody(t *tenant, transferID string, ev migrationEvent) map[string]any {
	b := map[string]any{
		"eventType": ev.typ, "cloudAppKey": r.d.Key, "transferId": transferID,
		"migrationDetails": map[string]any{
			"migrationId": "mig-" + transferID, "migrationScopeId": "scope-" + r.s.runID, "name": "simulated migration",
			"createdAt": time.Now().UnixMilli(), "jiraClientKey": t.clientKey, "confluenceClientKey": "unknown",
			"cloudUrl": r.s.baseURL(t.site.name),
		},
	}
	if !r.opts.NoMessageID {
		b["messageId"] = ev.messageID
	}
	if ev.s3Key != "" {
		b["s3Key"], b["label"] = ev.s3Key, ev.label
	}
	return b
}

func scMigration(ctx context.Context, r *run) {
	o := r.opts
	n := o.Uploads
	if n <= 0 {
		n = 3
	}
	t := r.newTenant("migration")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	// The platform sends events to the registered webhook, not to a path it
	// guesses.
	t.st.mu.Lock()
	endpoint := ""
	if len(t.st.endpoints) > 0 {
		endpoint = t.st.endpoints[0]
	}
	t.st.mu.Unlock()
	path, ok := strings.CutPrefix(endpoint, r.d.BaseURL)
	if !r.tl.expect("the registered webhook is the app's", ok && path != "", "an endpoint under "+r.d.BaseURL, endpoint) {
		return
	}
	r.s.mu.Lock()
	r.s.seq++
	transferID := fmt.Sprintf("tr-%s-%d", r.s.runID, r.s.seq)
	r.s.mu.Unlock()

	// The data is at the product before its event is sent.
	var uploads []migrationEvent
	var total int64
	for i := 1; i <= n; i++ {
		label := fmt.Sprintf("part-%d", i)
		size := int64(smallUpload * i)
		if i == n {
			label = "final"
			if o.Big > 0 {
				size = o.Big
			}
		}
		key := fmt.Sprintf("sim/%s/%s", transferID, label)
		uploads = append(uploads, migrationEvent{typ: evUploaded, s3Key: key, label: label, messageID: "m-" + key})
		total += size
		t.st.mu.Lock()
		t.st.uploads[key] = &upload{label: label, size: size}
		t.st.mu.Unlock()
	}
	trigger := migrationEvent{typ: evListenerTriggered, messageID: "m-" + transferID + "-lt"}
	var events []migrationEvent
	want := settleSuccess
	switch {
	case o.ListenerErrored:
		events, want = []migrationEvent{trigger, {typ: evListenerErrored, messageID: "m-" + transferID + "-err"}}, settleFailed
		clearUploads(t, uploads)
	case o.Cancel:
		events, want = []migrationEvent{trigger, uploads[0], {typ: evCancellation, messageID: "m-" + transferID + "-cancel"}}, settleIncomplete
		clearUploads(t, uploads[1:])
	case o.OutOfOrder:
		// An upload before listener-triggered, and the final one before the others.
		events = append(events, uploads[0])
		if n > 1 {
			events = append(events, uploads[n-1])
		}
		events = append(events, trigger)
		if n > 2 {
			events = append(events, uploads[1:n-1]...)
		}
	default:
		events = append([]migrationEvent{trigger}, uploads...)
	}
	r.note(fmt.Sprintf("transfer %s: %s, %s of data at the product; events%s%s%s",
		transferID, plural(n, "upload"), humanBytes(total), flag(o.OutOfOrder, " out of order"), flag(o.Duplicates, ", each sent again"),
		flag(o.NoMessageID, ", without messageId")))
	for _, ev := range events {
		times := 1
		if o.Duplicates {
			times = 2
			if ev.typ == evListenerTriggered {
				times = 3
			}
		}
		for i := range times {
			what := fmt.Sprintf("%s %s", ev.typ, ev.s3Key)
			if i > 0 {
				what += " (duplicate)"
			}
			rep := r.send(ctx, path, r.eventBody(t, transferID, ev), signing{alg: "HS256", issuer: t.clientKey, secret: t.secret()}, strings.TrimSpace(what))
			r.expectStatus(ev.typ+" answered", rep, http.StatusOK)
		}
	}
	within := r.s.cfg.Timeout + time.Duration(total/(40<<20))*time.Second
	settled := r.waitSettle(ctx, t, within)
	r.tl.expect("the worker settles the transfer "+want, hasStatus(settled, want),
		fmt.Sprintf("POST %s/progress/%s with status %s within %s", pathMigration, transferID, want, within.Round(time.Second)),
		"progress calls "+list(settled))
	r.quiet()
	settled = progressOf(t)
	r.tl.expect("the transfer is settled exactly once", countSettles(settled) == 1, "one settle call", "progress calls "+list(settled))
	switch {
	case o.ListenerErrored:
		got := t.st.matching(func(c Call) bool {
			return c.Method == http.MethodGet && c.Path == pathMigration+"/error/"+transferID && c.JWT == ""
		})
		r.tl.expect("the worker reads the listener's error", len(got) >= 1, "GET "+pathMigration+"/error/"+transferID, plural(len(got), "call"))
	case o.Cancel:
		t.st.mu.Lock()
		first := *t.st.uploads[uploads[0].s3Key]
		t.st.mu.Unlock()
		r.tl.expect("the upload sent before the cancellation is downloaded at most once", first.complete <= 1, "0 or 1 download", plural(first.complete, "download"))
	default:
		for _, u := range uploads {
			t.st.mu.Lock()
			up := *t.st.uploads[u.s3Key]
			t.st.mu.Unlock()
			r.tl.expect("upload "+u.label+" downloaded completely exactly once", up.complete == 1,
				fmt.Sprintf("1 complete download of %s", humanBytes(up.size)),
				fmt.Sprintf("%d complete of %s", up.complete, plural(up.downloads, "download")))
		}
	}
	r.expectJWTsClean(t)
}

// clearUploads removes uploads whose events are not sent.
func clearUploads(t *tenant, ups []migrationEvent) {
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	for _, u := range ups {
		delete(t.st.uploads, u.s3Key)
	}
}

func flag(on bool, s string) string {
	if on {
		return s
	}
	return ""
}

// waitSettle waits for a settle call (SUCCESS, FAILED or INCOMPLETE).
func (r *run) waitSettle(ctx context.Context, t *tenant, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		p := progressOf(t)
		if countSettles(p) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return p
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func progressOf(t *tenant) []string {
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	return append([]string(nil), t.st.progress...)
}

func countSettles(progress []string) int {
	n := 0
	for _, p := range progress {
		if !strings.HasPrefix(p, "IN_PROGRESS") {
			n++
		}
	}
	return n
}

func hasStatus(progress []string, status string) bool {
	for _, p := range progress {
		if strings.HasPrefix(p, status+"/") {
			return true
		}
	}
	return false
}
