package migration_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/internal/migration"
	tenantstore "github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// storeTenant installs clientKey in the tenant store of b's database, and
// uninstalls it when uninstalled is set.
func storeTenant(t *testing.T, b *bundle, clientKey string, uninstalled bool) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := tenantstore.NewSecretBox(key)
	if err != nil {
		t.Fatal(err)
	}
	store := tenantstore.NewStore(b.pool, box, testLogger())
	body, _ := json.Marshal(map[string]any{"key": "com.example.app", "clientKey": clientKey,
		"sharedSecret": "kept-secret-0123456789abcdef0123456789", "baseUrl": "https://example.atlassian.net",
		"productType": "jira", "eventType": "installed"})
	p, err := tenantstore.ParseInstallPayload(body)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := store.Install(ctx, p, tenantstore.ReceivedAt(now, now)); err != nil {
		t.Fatal(err)
	}
	if uninstalled {
		if _, err := store.Uninstall(ctx, clientKey, tenantstore.ReceivedAt(now.Add(time.Second), now.Add(time.Second))); err != nil {
			t.Fatal(err)
		}
	}
}

// A signing tenant cannot grow migration_events without bound with event types
// nobody acts on: over the cap they are acknowledged, counted, not stored; a
// re-delivery of a stored one still counts as a delivery.
func TestHandleEvent_UnknownEventsOverTheCapAreCountedNotStored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{UnactedEventCap: 3})
	for i := range 5 {
		ev := mustEvent(t, "transfer-paused", "", map[string]any{"messageId": fmt.Sprintf("m-%d", i)})
		if err := m.HandleEvent(ctx, tenant, ev); err != nil {
			t.Fatalf("unknown event %d: %v, want it acknowledged", i, err)
		}
	}
	// Known events are never capped.
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, "tr-known", map[string]any{"messageId": "m-known"}))
	// A re-delivery of a stored one.
	handle(t, ctx, m, mustEvent(t, "transfer-paused", "", map[string]any{"messageId": "m-0"}))

	var stored, deliveries int
	if err := b.pool.QueryRow(ctx, `SELECT count(*), coalesce(max(deliveries), 0) FROM migration_events WHERE client_key = $1 AND NOT known`, tenant).
		Scan(&stored, &deliveries); err != nil {
		t.Fatal(err)
	}
	if stored != 3 || deliveries != 2 {
		t.Errorf("stored unknown events = %d (max deliveries %d), want 3 (2)", stored, deliveries)
	}
	var dropped int64
	if err := b.pool.QueryRow(ctx, `SELECT dropped FROM migration_event_drops WHERE client_key = $1`, tenant).Scan(&dropped); err != nil || dropped != 2 {
		t.Errorf("dropped = %d (%v), want 2", dropped, err)
	}
	if tr := transfer(t, ctx, m, "tr-known"); tr.State == "" {
		t.Errorf("the known event was not applied")
	}
	// Another tenant has a cap of its own.
	if err := m.HandleEvent(ctx, otherTenant, mustEvent(t, "transfer-paused", "", map[string]any{"messageId": "m-0"})); err != nil {
		t.Fatal(err)
	}
	var other int
	_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM migration_events WHERE client_key = $1`, otherTenant).Scan(&other)
	if other != 1 {
		t.Errorf("other tenant's stored events = %d, want 1", other)
	}
}

// An uninstalled tenant's kept secret still verifies its migration events: they
// are acknowledged and recorded, but never acted on, and logged once.
func TestHandleEvent_UninstalledTenantsEventsAreRecordedNotActedOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	storeTenant(t, b, tenant, true)
	logs := &testenv.LogBuffer{}
	m := b.machine(t, nil, nil, migration.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	const tid = "tr-after-uninstall"
	events := []migration.Event{
		mustEvent(t, migration.EventListenerTriggered, tid, map[string]any{"messageId": "m-lt"}),
		uploadEvent(t, tid, "k1", "final"),
		mustEvent(t, migration.EventListenerErrored, tid, map[string]any{"messageId": "m-err"}),
	}
	for _, ev := range append(events, events[0]) { // the first one re-delivered
		if err := m.HandleEvent(ctx, tenant, ev); err != nil {
			t.Fatalf("%s: %v, want it acknowledged", ev.Type, err)
		}
	}
	if _, err := m.Transfer(ctx, tenant, tid); !errors.Is(err, migration.ErrTransferNotFound) {
		t.Errorf("an uninstalled tenant's event created a transfer: %v", err)
	}
	if calls := b.amp.calls(tid); len(calls) != 0 {
		t.Errorf("product called for an uninstalled tenant: %v", calls)
	}
	if s := b.amp.settleCalls(tid); len(s) != 0 {
		t.Errorf("settle calls for an uninstalled tenant: %v", s)
	}
	if q := b.queue.take(); len(q) != 0 {
		t.Errorf("imports scheduled for an uninstalled tenant: %v", q)
	}
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM migration_events WHERE client_key = $1 AND outcome = 'ignored'`, tenant).Scan(&n); err != nil || n != 3 {
		t.Errorf("ignored events recorded = %d (%v), want 3", n, err)
	}
	var feed int
	_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM event_outbox WHERE client_key = $1 AND transfer_id = $2`, tenant, tid).Scan(&feed)
	if feed != 0 {
		t.Errorf("%d feed events for an uninstalled tenant's migration", feed)
	}
	if got := strings.Count(logs.String(), "uninstalled tenant"); got != 3 {
		t.Errorf("logged %d times for 3 events and a re-delivery, want once per event (3)", got)
	}

	// An installed tenant's events are acted on as before.
	storeTenant(t, b, otherTenant, false)
	ev := mustEvent(t, migration.EventListenerTriggered, "tr-installed", map[string]any{"messageId": "m-ok"})
	ev.Details.JiraClientKey = otherTenant
	if err := m.HandleEvent(ctx, otherTenant, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Transfer(ctx, otherTenant, "tr-installed"); err != nil {
		t.Errorf("an installed tenant's event was not applied: %v", err)
	}
}

func TestPruneEvents_DeletesEventsPastTheirRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	for i := range 4 {
		handle(t, ctx, m, mustEvent(t, "transfer-paused", "", map[string]any{"messageId": fmt.Sprintf("m-%d", i)}))
	}
	if _, err := b.pool.Exec(ctx, `UPDATE migration_events SET last_received_at = now() - interval '31 days'
		WHERE dedupe_key IN ('msg:m-0', 'msg:m-1')`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE migration_events SET received_at = now() - interval '60 days'
		WHERE dedupe_key = 'msg:m-2'`); err != nil { // re-delivered lately: kept
		t.Fatal(err)
	}
	n, err := m.PruneEvents(ctx, migration.DefaultEventRetention, 0)
	if err != nil || n != 2 {
		t.Fatalf("PruneEvents = %d, %v; want 2", n, err)
	}
	var left []string
	rows, _ := b.pool.Query(ctx, `SELECT dedupe_key FROM migration_events ORDER BY dedupe_key`)
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		left = append(left, k)
	}
	rows.Close()
	if strings.Join(left, ",") != "msg:m-2,msg:m-3" {
		t.Errorf("left %v, want m-2 and m-3", left)
	}
	if _, err := m.PruneEvents(ctx, 0, 0); err == nil {
		t.Error("PruneEvents(0) accepted")
	}
}
