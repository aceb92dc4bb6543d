package migration_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/product"
)

// The transition table of the package doc, cell by cell: each case puts a
// transfer in a state with the machine's own inputs, applies one input, and
// checks the transfer's state, whether it is settled at the product, the settle
// calls made, and its uploads.
func TestTransitions_EveryCellOfThePackageDocTable(t *testing.T) {
	t.Parallel()
	const (
		parked = "s3/parked" // announced while waiting
		queued = "s3/queued" // announced while ready, not imported
		final  = "s3/final"  // the final-labelled upload
		fresh  = "s3/fresh"  // announced by the input
	)
	type fixture struct {
		b   *bundle
		m   *migration.Machine
		ctx context.Context
		tid string
	}
	ev := func(f fixture, typ migration.EventType, fields map[string]any) {
		t.Helper()
		if err := f.m.HandleEvent(f.ctx, tenant, mustEvent(t, typ, f.tid, fields)); err != nil {
			t.Fatalf("HandleEvent(%s): %v", typ, err)
		}
	}
	upload := func(f fixture, key, label string) {
		ev(f, migration.EventAppDataUploaded, map[string]any{"s3Key": key, "label": label})
	}
	// States, each reached through the machine.
	states := map[string]func(f fixture){
		"waiting": func(f fixture) { upload(f, parked, "part") },
		"ready": func(f fixture) {
			ev(f, migration.EventListenerTriggered, nil)
			upload(f, queued, "part")
			f.b.queue.take()
		},
		"cancelled": func(f fixture) {
			ev(f, migration.EventListenerTriggered, nil)
			ev(f, migration.EventTransferCancellationRequested, nil)
		},
		"succeeded": func(f fixture) {
			ev(f, migration.EventListenerTriggered, nil)
			upload(f, final, "final")
			f.b.queue.drain(t, f.ctx, f.m)
		},
		"failed": func(f fixture) {
			ev(f, migration.EventListenerTriggered, nil)
			ev(f, migration.EventListenerErrored, nil)
		},
	}
	// Inputs other than events.
	importQueued := func(f fixture) {
		if err := f.m.Import(f.ctx, migration.UploadRef{ClientKey: tenant, TransferID: f.tid, S3Key: queued}); err != nil {
			t.Fatalf("Import(%s): %v", queued, err)
		}
	}
	importLast := func(f fixture) { importQueued(f); upload(f, final, "final"); f.b.queue.drain(t, f.ctx, f.m) }
	failUpload := func(f fixture) {
		if err := f.m.FailUpload(f.ctx, migration.UploadRef{ClientKey: tenant, TransferID: f.tid, S3Key: queued}, errors.New("gave up")); err != nil {
			t.Fatalf("FailUpload: %v", err)
		}
	}
	noProgress := func(f fixture) {
		f.b.amp.setListErr(f.tid, errors.New("product: 503"))
		upload(f, final, "final")
		refs := f.b.queue.take()
		for _, r := range refs {
			_ = f.m.Import(f.ctx, r) // imported; the completion check fails
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := f.m.ReconcileStale(f.ctx, time.Millisecond, 10*time.Millisecond, 10); err != nil {
			t.Logf("ReconcileStale: %v", err)
		}
	}
	productSays := func(err error) func(f fixture) {
		return func(f fixture) {
			f.b.amp.setListErr(f.tid, err)
			upload(f, final, "final")
			f.b.queue.drain(t, f.ctx, f.m)
		}
	}
	expired := fmt.Errorf("product: 400 Bad Request: %w", product.ErrTransferExpired)
	settled := fmt.Errorf("product: 403 already settled: %w", product.ErrTransferSettled)

	type want struct {
		state   connectrelay.TransferState
		settled bool
		calls   []string // settle calls made by the input
		uploads map[string]migration.UploadState
	}
	tests := []struct {
		from, input string
		do          func(f fixture)
		want        want
	}{
		{"waiting", "listener-triggered", func(f fixture) { ev(f, migration.EventListenerTriggered, nil); f.b.queue.drain(t, f.ctx, f.m) },
			want{connectrelay.TransferReady, false, nil, map[string]migration.UploadState{parked: migration.UploadImported}}},
		{"waiting", "app-data-uploaded", func(f fixture) { upload(f, fresh, "part") },
			want{connectrelay.TransferWaiting, false, nil, map[string]migration.UploadState{parked: migration.UploadParked, fresh: migration.UploadParked}}},
		{"waiting", "cancellation", func(f fixture) { ev(f, migration.EventTransferCancellationRequested, nil) },
			want{connectrelay.TransferCancelled, true, []string{product.StatusIncomplete}, map[string]migration.UploadState{parked: migration.UploadSkipped}}},
		{"waiting", "listener-errored", func(f fixture) { ev(f, migration.EventListenerErrored, nil) },
			want{connectrelay.TransferFailed, true, []string{product.StatusFailed}, map[string]migration.UploadState{parked: migration.UploadSkipped}}},

		{"ready", "listener-triggered", func(f fixture) {
			ev(f, migration.EventListenerTriggered, nil)
			if got := len(f.b.queue.take()); got != 1 {
				t.Errorf("repeated listener-triggered scheduled %d uploads, want the 1 queued", got)
			}
		}, want{connectrelay.TransferReady, false, nil, map[string]migration.UploadState{queued: migration.UploadQueued}}},
		{"ready", "app-data-uploaded", func(f fixture) { upload(f, fresh, "part") },
			want{connectrelay.TransferReady, false, nil, map[string]migration.UploadState{queued: migration.UploadQueued, fresh: migration.UploadQueued}}},
		{"ready", "cancellation", func(f fixture) { ev(f, migration.EventTransferCancellationRequested, nil) },
			want{connectrelay.TransferCancelled, true, []string{product.StatusIncomplete}, map[string]migration.UploadState{queued: migration.UploadSkipped}}},
		{"ready", "listener-errored", func(f fixture) { ev(f, migration.EventListenerErrored, nil) },
			want{connectrelay.TransferFailed, true, []string{product.StatusFailed}, map[string]migration.UploadState{queued: migration.UploadSkipped}}},
		{"ready", "last upload imported", importLast,
			want{connectrelay.TransferSucceeded, true, []string{product.StatusSuccess}, map[string]migration.UploadState{queued: migration.UploadImported, final: migration.UploadImported}}},
		{"ready", "upload failed", failUpload,
			want{connectrelay.TransferFailed, true, []string{product.StatusFailed}, map[string]migration.UploadState{queued: migration.UploadFailed}}},
		{"ready", "no progress", func(f fixture) {
			importQueued(f)
			noProgress(f)
		}, want{connectrelay.TransferFailed, true, []string{product.StatusFailed}, map[string]migration.UploadState{queued: migration.UploadImported, final: migration.UploadImported}}},
		{"ready", "product: expired", func(f fixture) { importQueued(f); productSays(expired)(f) },
			want{connectrelay.TransferFailed, true, nil, map[string]migration.UploadState{queued: migration.UploadImported, final: migration.UploadImported}}},
		{"ready", "product: settled", func(f fixture) { importQueued(f); productSays(settled)(f) },
			want{connectrelay.TransferReady, true, nil, map[string]migration.UploadState{queued: migration.UploadImported, final: migration.UploadImported}}},

		{"cancelled", "listener-triggered", func(f fixture) { ev(f, migration.EventListenerTriggered, nil) },
			want{connectrelay.TransferCancelled, true, nil, map[string]migration.UploadState{}}},
		{"cancelled", "app-data-uploaded", func(f fixture) { upload(f, fresh, "part") },
			want{connectrelay.TransferCancelled, true, nil, map[string]migration.UploadState{fresh: migration.UploadSkipped}}},
		{"cancelled", "cancellation", func(f fixture) {
			ev(f, migration.EventTransferCancellationRequested, map[string]any{"messageId": "again"})
		},
			want{connectrelay.TransferCancelled, true, nil, map[string]migration.UploadState{}}},
		{"cancelled", "listener-errored", func(f fixture) { ev(f, migration.EventListenerErrored, nil) },
			want{connectrelay.TransferCancelled, true, nil, map[string]migration.UploadState{}}},

		{"succeeded", "listener-triggered", func(f fixture) { ev(f, migration.EventListenerTriggered, map[string]any{"messageId": "again"}) },
			want{connectrelay.TransferSucceeded, true, nil, map[string]migration.UploadState{final: migration.UploadImported}}},
		{"succeeded", "app-data-uploaded", func(f fixture) { upload(f, fresh, "part") },
			want{connectrelay.TransferSucceeded, true, nil, map[string]migration.UploadState{final: migration.UploadImported, fresh: migration.UploadSkipped}}},
		{"succeeded", "cancellation", func(f fixture) { ev(f, migration.EventTransferCancellationRequested, nil) },
			want{connectrelay.TransferSucceeded, true, nil, map[string]migration.UploadState{final: migration.UploadImported}}},
		{"succeeded", "listener-errored", func(f fixture) { ev(f, migration.EventListenerErrored, nil) },
			want{connectrelay.TransferSucceeded, true, nil, map[string]migration.UploadState{final: migration.UploadImported}}},

		{"failed", "listener-triggered", func(f fixture) { ev(f, migration.EventListenerTriggered, map[string]any{"messageId": "again"}) },
			want{connectrelay.TransferFailed, true, nil, map[string]migration.UploadState{}}},
		{"failed", "app-data-uploaded", func(f fixture) { upload(f, fresh, "part") },
			want{connectrelay.TransferFailed, true, nil, map[string]migration.UploadState{fresh: migration.UploadSkipped}}},
		{"failed", "cancellation", func(f fixture) { ev(f, migration.EventTransferCancellationRequested, nil) },
			want{connectrelay.TransferFailed, true, nil, map[string]migration.UploadState{}}},
		{"failed", "listener-errored", func(f fixture) { ev(f, migration.EventListenerErrored, map[string]any{"messageId": "again"}) },
			want{connectrelay.TransferFailed, true, nil, map[string]migration.UploadState{}}},
	}
	for _, tt := range tests {
		t.Run(tt.from+"/"+tt.input, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			f := fixture{b: b, ctx: ctxT(t, 30*time.Second), tid: "transfer-" + tt.from}
			f.m = b.machine(t, nil, nil, migration.Options{})
			states[tt.from](f)
			before := len(b.amp.settleCalls(f.tid))
			tt.do(f)
			tr := transfer(t, f.ctx, f.m, f.tid)
			if tr.State != tt.want.state {
				t.Errorf("state = %s, want %s", tr.State, tt.want.state)
			}
			if got := !tr.SettledAt.IsZero(); got != tt.want.settled {
				t.Errorf("settled = %v, want %v (result %q, error %q)", got, tt.want.settled, tr.SettleResult, tr.SettleError)
			}
			if diff := cmp.Diff(tt.want.calls, b.amp.settleCalls(f.tid)[before:], cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("settle calls made by the input (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want.uploads, uploadStates(t, f.ctx, f.m, f.tid), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("uploads (-want +got):\n%s", diff)
			}
		})
	}
}
