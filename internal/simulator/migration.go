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

// migrationPlan is one transfer as a migration scenario plays it: the
// uploads put at the product before their events, the events in the order
// they are sent, and how the transfer must end.
type migrationPlan struct {
	transferID string
	uploads    []migrationEvent
	events     []migrationEvent
	// want is the settle status the options call for (settleSuccess, ...).
	want  string
	total int64
}

// planMigration puts the transfer's uploads at st (--uploads, --big) and
// orders its events as the options say (--out-of-order, --cancel,
// --listener-errored); uploads whose events are not sent are taken away
// again.
func (r *run) planMigration(st *tenantState, transferID string) migrationPlan {
	o := r.opts
	n := o.Uploads
	if n <= 0 {
		n = 3
	}
	p := migrationPlan{transferID: transferID, want: settleSuccess}
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
		p.uploads = append(p.uploads, migrationEvent{typ: evUploaded, s3Key: key, label: label, messageID: "m-" + key})
		p.total += size
		st.mu.Lock()
		st.uploads[key] = &upload{label: label, size: size, transfer: transferID}
		st.mu.Unlock()
	}
	trigger := migrationEvent{typ: evListenerTriggered, messageID: "m-" + transferID + "-lt"}
	switch {
	case o.ListenerErrored:
		p.events, p.want = []migrationEvent{trigger, {typ: evListenerErrored, messageID: "m-" + transferID + "-err"}}, settleFailed
		clearUploads(st, p.uploads)
	case o.Cancel:
		p.events, p.want = []migrationEvent{trigger, p.uploads[0], {typ: evCancellation, messageID: "m-" + transferID + "-cancel"}}, settleIncomplete
		clearUploads(st, p.uploads[1:])
	case o.OutOfOrder:
		// An upload before listener-triggered, and the final one before the others.
		p.events = append(p.events, p.uploads[0])
		if n > 1 {
			p.events = append(p.events, p.uploads[n-1])
		}
		p.events = append(p.events, trigger)
		if n > 2 {
			p.events = append(p.events, p.uploads[1:n-1]...)
		}
	default:
		p.events = append([]migrationEvent{trigger}, p.uploads...)
	}
	return p
}

// describe is the plan's line on the timeline.
func (p migrationPlan) describe(o Options) string {
	return fmt.Sprintf("transfer %s: %s, %s of data at the product; events%s%s%s",
		p.transferID, plural(len(p.uploads), "upload"), humanBytes(p.total), flag(o.OutOfOrder, " out of order"),
		flag(o.Duplicates, ", each sent again"), flag(o.NoMessageID, ", without messageId"))
}

// within is how long the worker gets to settle the plan's transfer: the
// timeout, and a second for every 40 MiB of data.
func (p migrationPlan) within(timeout time.Duration) time.Duration {
	return timeout + time.Duration(p.total/(40<<20))*time.Second
}

// sends is how many times the platform sends ev: once, or with
// --duplicates twice, listener-triggered three times.
func (o Options) sends(ev migrationEvent) int {
	switch {
	case !o.Duplicates:
		return 1
	case ev.typ == evListenerTriggered:
		return 3
	default:
		return 2
	}
}

// transferID is a fresh transfer id of this run.
func (r *run) transferID() string {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.seq++
	return fmt.Sprintf("tr-%s-%d", r.s.runID, r.s.seq)
}

func scMigration(ctx context.Context, r *run) {
	o := r.opts
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
	// The data is at the product before its event is sent.
	p := r.planMigration(t.st, r.transferID())
	transferID := p.transferID
	r.note(p.describe(o))
	for _, ev := range p.events {
		for i := range o.sends(ev) {
			what := fmt.Sprintf("%s %s", ev.typ, ev.s3Key)
			if i > 0 {
				what += " (duplicate)"
			}
			rep := r.send(ctx, path, r.eventBody(t, transferID, ev), signing{alg: "HS256", issuer: t.clientKey, secret: t.secret()}, strings.TrimSpace(what))
			r.expectStatus(ev.typ+" answered", rep, http.StatusOK)
		}
	}
	within := p.within(r.s.cfg.Timeout)
	settled := r.waitSettle(ctx, t, within)
	r.tl.expect("the worker settles the transfer "+p.want, hasStatus(settled, p.want),
		fmt.Sprintf("POST %s/progress/%s with status %s within %s", pathMigration, transferID, p.want, within.Round(time.Second)),
		"progress calls "+list(settled))
	r.quiet()
	settled = progressOf(t)
	r.tl.expect("the transfer is settled exactly once", countSettles(settled) == 1, "one settle call", "progress calls "+list(settled))
	if o.ListenerErrored {
		got := t.st.matching(func(c Call) bool {
			return c.Method == http.MethodGet && c.Path == pathMigration+"/error/"+transferID && c.JWT == ""
		})
		r.tl.expect("the worker reads the listener's error", len(got) >= 1, "GET "+pathMigration+"/error/"+transferID, plural(len(got), "call"))
	}
	r.expectDownloads(t.st, p)
	r.expectJWTsClean(t)
}

// expectDownloads checks the presigned downloads of the plan's uploads:
// each sent upload downloaded completely exactly once (at most once, the
// one sent before a cancellation), and none with an Authorization header.
func (r *run) expectDownloads(st *tenantState, p migrationPlan) {
	o := r.opts
	get := func(key string) upload {
		st.mu.Lock()
		defer st.mu.Unlock()
		if u, ok := st.uploads[key]; ok {
			return *u
		}
		return upload{}
	}
	authorized := 0
	switch {
	case o.ListenerErrored:
	case o.Cancel:
		first := get(p.uploads[0].s3Key)
		authorized += first.authorized
		r.tl.expect("the upload sent before the cancellation is downloaded at most once", first.complete <= 1, "0 or 1 download", plural(first.complete, "download"))
	default:
		for _, u := range p.uploads {
			up := get(u.s3Key)
			authorized += up.authorized
			r.tl.expect("upload "+u.label+" downloaded completely exactly once", up.complete == 1,
				fmt.Sprintf("1 complete download of %s", humanBytes(up.size)),
				fmt.Sprintf("%d complete of %s", up.complete, plural(up.downloads, "download")))
		}
	}
	r.tl.expect("no presigned download carried an Authorization header", authorized == 0,
		"downloads without credentials", plural(authorized, "download")+" with an Authorization header")
}

// clearUploads removes uploads whose events are not sent.
func clearUploads(st *tenantState, ups []migrationEvent) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, u := range ups {
		delete(st.uploads, u.s3Key)
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
