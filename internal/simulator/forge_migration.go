package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/connectrelay/connectrelay/forge/forgetest"
)

// The App Migration Platform for a Forge app: migration events go to the
// app's /forge/migration with a FIT and a system token, and the app answers
// through the Forge migration API on the host of its apiBaseUrl:
//
//	GET  /app/migration/forge/v1/data/{key}                 {"url": presigned}: the upload's data, served at /s3/...
//	GET  /app/migration/forge/v1/data/{transferId}/all      [{key, label}]: the transfer's uploads
//	POST /app/migration/forge/v1/message/{transferId}/status {status: SUCCESS|FAILED, messageIds}
//	POST /app/migration/forge/v1/log/{transferId}           {message}: the progress log (the app's settle is a line here)
//	GET  /app/migration/forge/v1/mapping/{transferId}/page  no mappings
//	POST /app/migration/forge/v1/mapping/{transferId}/find  no mappings
//
// Each answers only to a system token issued for the installation whose
// transfer it names. The shapes are the service's reading of Atlassian's
// pages (docs/forge-migrations.md lists what is UNCONFIRMED); the simulator
// writes them down independently of product/forge_amp.go, and settles no
// transfer itself (a real platform does, once every message has a status).

// pathForgeMigrationAPI is the Forge migration API's root on the listener.
const pathForgeMigrationAPI = "/app/migration/forge/v1"

// appForgeMigration is the app's Forge migration route
// (handlers.PathForgeMigration).
const appForgeMigration = "/forge/migration"

// moduleMigration is the app.module.key of migration tokens
// (FORGE_MIGRATION_MODULE_KEYS may name it).
const moduleMigration = "migration-endpoint"

// Forge message statuses.
const (
	messageSuccess = "SUCCESS"
	messageFailed  = "FAILED"
)

// forgeEventTypes are the Forge eventType names of the migration events.
var forgeEventTypes = map[string]string{
	evListenerTriggered: "avi:ecosystem.migration:triggered:listener",
	evUploaded:          "avi:ecosystem.migration:uploaded:app_data",
	evCancellation:      "avi:ecosystem.migration:requested:transfer_cancellation",
	evListenerErrored:   "avi:ecosystem.migration:errored:listener",
}

// forgeTransfer is what the simulated platform knows of one Forge transfer.
// Its fields are guarded by the forgeAPI's mutex; its uploads are the
// installation's site's, guarded by that site's tenant state.
type forgeTransfer struct {
	id string
	fi *forgeInstallation
	// sent is the type of each messageId the simulator sent.
	sent map[string]string
	// statuses are the statuses set for each sent messageId, in order;
	// stray those set for a messageId never sent ("STATUS messageId").
	statuses map[string][]string
	stray    []string
	logs     []string
}

// newForgeTransfer registers a transfer of fi, whose uploads are stored at
// fi.data, and the keys of its uploads.
func (s *Simulator) newForgeTransfer(fi *forgeInstallation, p migrationPlan) *forgeTransfer {
	ft := &forgeTransfer{id: p.transferID, fi: fi, sent: map[string]string{}, statuses: map[string][]string{}}
	s.fapi.mu.Lock()
	defer s.fapi.mu.Unlock()
	s.fapi.transfers[ft.id] = ft
	for _, u := range p.uploads {
		s.fapi.keys[u.s3Key] = ft
	}
	return ft
}

// markSent records that a message of ft was sent.
func (s *Simulator) markSent(ft *forgeTransfer, ev migrationEvent) {
	s.fapi.mu.Lock()
	defer s.fapi.mu.Unlock()
	ft.sent[ev.messageID] = ev.typ
}

// forgeTransferView is a copy of what the platform recorded of a transfer.
type forgeTransferView struct {
	sent     map[string]string
	statuses map[string][]string
	stray    []string
	logs     []string
}

func (s *Simulator) viewTransfer(ft *forgeTransfer) forgeTransferView {
	s.fapi.mu.Lock()
	defer s.fapi.mu.Unlock()
	v := forgeTransferView{sent: map[string]string{}, statuses: map[string][]string{},
		stray: slices.Clone(ft.stray), logs: slices.Clone(ft.logs)}
	for k, t := range ft.sent {
		v.sent[k] = t
	}
	for k, st := range ft.statuses {
		v.statuses[k] = slices.Clone(st)
	}
	return v
}

// settles are the log lines that settle the transfer: those starting with
// SUCCESS, FAILED or INCOMPLETE (progress reports start with IN_PROGRESS).
func (v forgeTransferView) settles() []string {
	var out []string
	for _, l := range v.logs {
		switch strings.SplitN(l, " ", 2)[0] {
		case settleSuccess, settleFailed, settleIncomplete:
			out = append(out, l)
		}
	}
	return out
}

// answerForgeMigration answers a call to the Forge migration API (rel is the
// escaped path below pathForgeMigrationAPI) authorized by fi's system token.
// refused is set when the call names another installation's transfer or
// upload; note describes the call for the timeline.
func (s *Simulator) answerForgeMigration(fi *forgeInstallation, method, rel string, body []byte) (status int, answer, note, refused string) {
	segs := strings.Split(rel, "/")
	for i, seg := range segs {
		if u, err := url.PathUnescape(seg); err == nil {
			segs[i] = u
		}
	}
	notFound := func(what string) (int, string, string, string) {
		return http.StatusNotFound, jsonString(map[string]string{"message": what}), "", ""
	}
	s.fapi.mu.Lock()
	var ft *forgeTransfer
	switch {
	case len(segs) == 2 && segs[0] == "data":
		ft = s.fapi.keys[segs[1]]
	case len(segs) >= 2:
		ft = s.fapi.transfers[segs[1]]
	}
	s.fapi.mu.Unlock()
	if ft == nil {
		return notFound("no such transfer or upload")
	}
	if ft.fi != fi {
		return 0, "", "", "the system token of installation " + fi.id + " used for transfer " + ft.id + " of " + ft.fi.id
	}
	st := fi.data.st
	switch {
	case method == http.MethodGet && len(segs) == 2 && segs[0] == "data":
		st.mu.Lock()
		_, ok := st.uploads[segs[1]]
		st.mu.Unlock()
		if !ok {
			return notFound("no data for this key")
		}
		presigned := s.origin + "/s3/" + fi.data.name + "/" + url.PathEscape(segs[1]) + "?X-Amz-Expires=900&X-Amz-Signature=" + randomHex(16)
		return http.StatusOK, jsonString(map[string]string{"url": presigned}), "", ""
	case method == http.MethodGet && len(segs) == 3 && segs[0] == "data" && segs[2] == "all":
		list := []map[string]string{}
		st.mu.Lock()
		for key, u := range st.uploads {
			if u.transfer == ft.id {
				list = append(list, map[string]string{"key": key, "label": u.label})
			}
		}
		st.mu.Unlock()
		return http.StatusOK, jsonString(list), "", ""
	case method == http.MethodPost && len(segs) == 3 && segs[0] == "message" && segs[2] == "status":
		var in struct {
			Status     string   `json:"status"`
			MessageIDs []string `json:"messageIds"`
		}
		if err := json.Unmarshal(body, &in); err != nil || (in.Status != messageSuccess && in.Status != messageFailed) || len(in.MessageIDs) == 0 {
			return http.StatusBadRequest, jsonString(map[string]string{"message": `body must be {"status": "SUCCESS"|"FAILED", "messageIds": [...]}`}), "", ""
		}
		s.fapi.mu.Lock()
		for _, id := range in.MessageIDs {
			if _, ok := ft.sent[id]; ok {
				ft.statuses[id] = append(ft.statuses[id], in.Status)
			} else {
				ft.stray = append(ft.stray, in.Status+" "+id)
			}
		}
		s.fapi.mu.Unlock()
		return http.StatusOK, "{}", in.Status + " " + strings.Join(in.MessageIDs, ", "), ""
	case method == http.MethodPost && len(segs) == 2 && segs[0] == "log":
		var in struct {
			Message string `json:"message"`
		}
		if err := json.Unmarshal(body, &in); err != nil || in.Message == "" {
			return http.StatusBadRequest, jsonString(map[string]string{"message": `body must be {"message": "..."}`}), "", ""
		}
		s.fapi.mu.Lock()
		ft.logs = append(ft.logs, in.Message)
		s.fapi.mu.Unlock()
		return http.StatusOK, "{}", truncateString(in.Message, 160), ""
	case method == http.MethodGet && len(segs) == 3 && segs[0] == "mapping" && segs[2] == "page":
		return http.StatusOK, jsonString(map[string]any{"meta": map[string]any{"pageSize": 1200, "hasNext": false, "lastEntity": nil},
			"items": map[string]string{}}), "", ""
	case method == http.MethodPost && len(segs) == 3 && segs[0] == "mapping" && segs[2] == "find":
		return http.StatusOK, "{}", "", ""
	default:
		return notFound("the simulator has no " + method + " " + pathForgeMigrationAPI + "/" + rel)
	}
}

// forgeMigrationBody is the Forge event for ev of transfer ft; createdAt is
// the migration's, the same in every copy.
func (r *run) forgeMigrationBody(ft *forgeTransfer, ev migrationEvent, createdAt int64) map[string]any {
	b := map[string]any{
		"eventType": forgeEventTypes[ev.typ], "transferId": ft.id,
		"migrationDetails": map[string]any{
			"migrationId": "mig-" + ft.id, "migrationScopeId": "scope-" + r.s.runID, "name": "simulated migration",
			"createdAt": createdAt, "cloudUrl": ft.fi.siteURL,
		},
	}
	if !r.opts.NoMessageID {
		b["messageId"] = ev.messageID
	}
	if ev.s3Key != "" {
		b["key"], b["label"] = ev.s3Key, ev.label
	}
	return b
}

// owedStatus is what status a sent message must end with: one of the
// returned statuses, exactly once; none when the message owes no status
// (then it may get at most one). The platform asks for a status of each
// uploaded:app_data; the app acknowledges triggered:listener too.
func (o Options) owedStatus(typ string) []string {
	switch {
	case typ == evListenerTriggered:
		return []string{messageSuccess}
	case typ != evUploaded:
		return nil
	case o.Cancel:
		// Imported before the cancellation arrived, or left behind by it.
		return []string{messageSuccess, messageFailed}
	default:
		return []string{messageSuccess}
	}
}

func scForgeMigration(ctx context.Context, r *run) {
	o := r.opts
	fi := r.newForgeInstallation("")
	if !r.forgeInstalled(ctx, fi) {
		return
	}
	// The data is at the platform before its event is sent.
	p := r.planMigration(fi.data.st, forgetest.NewUUID())
	ft := r.s.newForgeTransfer(fi, p)
	r.note(p.describe(o) + ", each copy with a new FIT and system token")
	createdAt := time.Now().UnixMilli()
	triggered := false
	for n, ev := range p.events {
		if !o.NoMessageID {
			r.s.markSent(ft, ev)
		}
		name := forgeEventTypes[ev.typ]
		for i := range o.sends(ev) {
			if i == 1 && ev.typ == evUploaded && triggered && n < len(p.events)-1 {
				r.awaitImport(ctx, ft, ev)
			}
			fs := forgeSend{path: appForgeMigration, module: moduleMigration, body: r.forgeMigrationBody(ft, ev, createdAt),
				what: strings.TrimSpace(name + " " + ev.s3Key)}
			if i > 0 {
				fs.retry, fs.what = i, fs.what+" (re-sent)"
			}
			r.expectStatus(name+" answered", r.deliverForge(ctx, fi, fs), http.StatusNoContent)
		}
		triggered = triggered || ev.typ == evListenerTriggered
	}
	within := p.within(r.s.cfg.Timeout)
	owedAll := func(v forgeTransferView) bool {
		for id, typ := range v.sent {
			if len(o.owedStatus(typ)) > 0 && len(v.statuses[id]) == 0 {
				return false
			}
		}
		return true
	}
	var v forgeTransferView
	deadline := time.Now().Add(within)
	for {
		v = r.s.viewTransfer(ft)
		if (len(v.settles()) > 0 && owedAll(v)) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	logPath := pathForgeMigrationAPI + "/log/" + ft.id
	r.tl.expect("the worker settles the transfer "+p.want+" in its progress log", slices.ContainsFunc(v.settles(),
		func(l string) bool { return strings.HasPrefix(l, p.want+" ") }),
		fmt.Sprintf("POST %s with a line starting %s within %s", logPath, p.want, within.Round(time.Second)),
		"log lines "+list(v.logs))
	r.quiet()
	v = r.s.viewTransfer(ft)
	r.tl.expect("the transfer is settled exactly once", len(v.settles()) == 1, "one settle line", "log lines "+list(v.logs))
	r.expectMessageStatuses(p, v)
	r.expectDownloads(fi.data.st, p)
	r.expectForgeAPIClean()
}

// awaitImport holds the re-sent copy of an upload that can be imported
// before the transfer completes until the worker imported it (its message
// got a status, or without messageIds its data was downloaded), up to the
// timeout: the copy then meets an imported upload of an open transfer, as
// Forge's retry after an answer it did not see does, and must not import it
// again.
func (r *run) awaitImport(ctx context.Context, ft *forgeTransfer, ev migrationEvent) {
	st := ft.fi.data.st
	done := func() bool {
		if !r.opts.NoMessageID {
			return len(r.s.viewTransfer(ft).statuses[ev.messageID]) > 0
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		u, ok := st.uploads[ev.s3Key]
		return ok && u.complete > 0
	}
	start := time.Now()
	deadline := start.Add(r.s.cfg.Timeout)
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	r.note(fmt.Sprintf("the copy of %s is re-sent after the worker imported it (waited %s)", ev.s3Key, time.Since(start).Round(time.Millisecond)))
}

// expectMessageStatuses checks what the worker set for each message the
// simulator sent, in the order sent: exactly one status of those owed, at
// most one for a message that owes none, and no status for a messageId
// never sent.
func (r *run) expectMessageStatuses(p migrationPlan, v forgeTransferView) {
	o := r.opts
	if o.NoMessageID {
		r.tl.expect("no message status without messageIds", len(v.stray) == 0, "no status call", plural(len(v.stray), "status")+" "+list(v.stray))
		return
	}
	statusPath := pathForgeMigrationAPI + "/message/" + p.transferID + "/status"
	done := map[string]bool{}
	for _, ev := range p.events {
		if done[ev.messageID] {
			continue
		}
		done[ev.messageID] = true
		got := v.statuses[ev.messageID]
		seen := "statuses [" + strings.Join(got, ", ") + "]"
		owed := o.owedStatus(ev.typ)
		if len(owed) == 0 {
			r.tl.expect(fmt.Sprintf("%s %s got at most one status", forgeEventTypes[ev.typ], ev.messageID), len(got) <= 1,
				"no status owed; at most one", seen)
			continue
		}
		r.tl.expect(fmt.Sprintf("message %s got exactly one status", ev.messageID), len(got) == 1 && slices.Contains(owed, got[0]),
			fmt.Sprintf("one POST %s setting %s", statusPath, strings.Join(owed, " or ")), seen)
	}
	r.tl.expect("no status for a messageId the platform never sent", len(v.stray) == 0, "none", plural(len(v.stray), "status")+" "+list(v.stray))
}
