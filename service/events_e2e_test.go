package service_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/service"
)

// recordingListener records the events it hears; it fails the first failFirst
// deliveries of every event.
type recordingListener struct {
	mu        sync.Mutex
	failFirst int
	tries     map[string]int
	tenant    []*connectrelay.LifecycleEvent
	transfer  []*connectrelay.TransferEvent
}

func (l *recordingListener) try(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tries == nil {
		l.tries = map[string]int{}
	}
	l.tries[id]++
	return l.tries[id] > l.failFirst
}

func (l *recordingListener) TenantLifecycle(_ context.Context, ev *connectrelay.LifecycleEvent) error {
	if !l.try(ev.ID) {
		return errors.New("backend busy")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tenant = append(l.tenant, ev)
	return nil
}

func (l *recordingListener) TransferEvent(_ context.Context, ev *connectrelay.TransferEvent) error {
	if !l.try(ev.ID) {
		return errors.New("backend busy")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.transfer = append(l.transfer, ev)
	return nil
}

func (l *recordingListener) types() (tenant, transfer []connectrelay.EventType) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.tenant {
		tenant = append(tenant, ev.Type)
	}
	for _, ev := range l.transfer {
		transfer = append(transfer, ev.Type)
	}
	return tenant, transfer
}

// Every change reaches the listeners through the event feed, once each even when
// a listener fails twice first, with the same ID on every try and Sequence
// increasing per tenant.
func TestEvents_ListenersHearEveryChangeOnceDespiteFailures(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-events-0123456789ab"
	amp := newAMPSite(t)
	amp.data["k1"] = []byte("the final part")
	prod := newProduct(t, secret, amp)
	l := &recordingListener{failFirst: 2}
	e.startWorker(service.WorkerOptions{Listener: l, MigrationListener: l})

	e.install("ck-1", prod, secret)
	if code := e.hs256(handlers.PathEnabled, "ck-1", secret, map[string]any{"clientKey": "ck-1", "eventType": "enabled"}); code != http.StatusNoContent {
		t.Fatalf("enabled = %d", code)
	}
	for _, ev := range []map[string]any{
		ampEvent("listener-triggered", "tr-ev", "m-lt", "ck-1", "", ""),
		ampEvent("app-data-uploaded", "tr-ev", "m-up", "ck-1", "k1", "final"),
		{"eventType": "transfer-paused", "messageId": "m-new"},
	} {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d", ev["eventType"], code)
		}
	}
	eventually(t, 20*time.Second, "the transfer settled", func() bool {
		_, tr := l.types()
		return slices.Contains(tr, connectrelay.EventTransferSettled)
	})
	renamed := newProduct(t, secret, newSite())
	e.installAt("ck-1", renamed, secret, time.Now().Add(time.Second)) // a site rename: tenant.updated

	wantTenant := []connectrelay.EventType{connectrelay.EventInstalled, connectrelay.EventLicenseChanged, connectrelay.EventEnabled, connectrelay.EventUpdated}
	wantTransfer := []connectrelay.EventType{connectrelay.EventTransferReady, connectrelay.EventMigrationEvent, connectrelay.EventTransferSettled}
	eventually(t, 20*time.Second, "every event delivered", func() bool {
		tn, tr := l.types()
		return len(tn) >= len(wantTenant) && len(tr) >= len(wantTransfer)
	})
	time.Sleep(500 * time.Millisecond) // a repeat would have arrived by now
	tn, tr := l.types()
	slices.Sort(tn)
	slices.Sort(wantTenant)
	if !slices.Equal(tn, wantTenant) {
		t.Errorf("tenant events = %v, want %v", tn, wantTenant)
	}
	slices.Sort(tr)
	slices.Sort(wantTransfer)
	if !slices.Equal(tr, wantTransfer) {
		t.Errorf("transfer events = %v, want %v", tr, wantTransfer)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, n := range l.tries {
		if n != 3 {
			t.Errorf("event %s tried %d times, want 3 (two failures, then delivered)", id, n)
		}
	}
	seq := map[connectrelay.EventType]int64{}
	for _, ev := range l.tenant {
		seq[ev.Type] = ev.Sequence
		if ev.Type == connectrelay.EventUpdated && (len(ev.Changes) == 0 || ev.Tenant.BaseURL != renamed.BaseURL()) {
			t.Errorf("updated: changes %v, tenant baseUrl %s; want the rename to %s", ev.Changes, ev.Tenant.BaseURL, renamed.BaseURL())
		}
	}
	if !(seq[connectrelay.EventInstalled] < seq[connectrelay.EventEnabled] && seq[connectrelay.EventEnabled] < seq[connectrelay.EventUpdated]) {
		t.Errorf("sequences %v: want installed < enabled < updated, the order they were recorded", seq)
	}
	for _, ev := range l.transfer {
		if ev.Type == connectrelay.EventTransferSettled && ev.Transfer.SettleStatus != "SUCCESS" {
			t.Errorf("settled event's transfer = %+v, want SUCCESS", ev.Transfer)
		}
	}
}
