package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/product"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AMP is the part of the App Migration Platform REST API the machine calls, on the
// tenant's product with the app's JWT; *product.AMP implements it, and tests
// implement it to play the product. It includes what an Importer may call
// (connectrelay.MigrationAPI), because the machine hands it to the Importer.
type AMP interface {
	connectrelay.MigrationAPI
	// OpenData resolves the s3Key to its presigned URL and returns the streamed
	// body of a GET of that URL. The caller closes it. Cancelling ctx aborts the
	// download.
	OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error)
	// ReportProgress posts a progress or settle status for the transfer. It
	// returns an error wrapping product.ErrTransferSettled when the product
	// answers that the transfer is already settled, and one wrapping
	// product.ErrTransferExpired when it answers that the transfer is past the
	// 14-day window: both answers are final and never retried. The machine makes
	// this call with no database lock or transaction open.
	ReportProgress(ctx context.Context, clientKey, transferID string, p product.Progress) error
	// ErrorDetails fetches what the app's server-side listener reported when it
	// failed.
	ErrorDetails(ctx context.Context, clientKey, transferID string) (json.RawMessage, error)
	// ListData returns every upload the product holds for the transfer, with
	// the same final answers as ReportProgress.
	ListData(ctx context.Context, clientKey, transferID string) ([]product.Upload, error)
}

var _ AMP = (*product.AMP)(nil)

// Scheduler queues one import of an upload; the tasks package implements it with an
// asynq task whose TaskID derives from transfer and s3Key (and ref.Reschedule). The
// machine schedules an upload again whenever it sees it still queued (a retried
// listener-triggered or app-data-uploaded), so ScheduleImport must treat "already
// scheduled" as success. Duplicate imports are harmless anyway: Machine.Import is
// idempotent.
type Scheduler interface {
	ScheduleImport(ctx context.Context, ref UploadRef) error
}

// UploadRef names one upload for an import task. It carries identifiers only.
type UploadRef struct {
	ClientKey  string `json:"clientKey"`
	TransferID string `json:"transferId"`
	S3Key      string `json:"s3Key"`
	Label      string `json:"label,omitempty"`
	// Reschedule is zero when an event schedules the upload, and a new non-zero
	// value each time Machine.RequeueStale schedules it again. The task layer
	// derives the task's ID from TransferID and S3Key, plus Reschedule when it is
	// non-zero: a task that was archived (retries exhausted) or lost keeps the
	// plain ID taken for as long as the queue retains it (14 days), so scheduling
	// under that ID again would be a silent no-op and the upload would stay queued.
	// Import ignores it.
	Reschedule int `json:"reschedule,omitempty"`
}

// Errors callers branch on.
var (
	// ErrTransferStopped is the cause (context.Cause) of an import context that the
	// machine cancelled because the transfer was cancelled, failed or settled.
	ErrTransferStopped = errors.New("transfer stopped")
	// ErrTenantMismatch: the event's tenant is not the transfer's (or not one of
	// the event's migrationDetails client keys). Permanent: do not retry.
	ErrTenantMismatch = errors.New("transfer belongs to another tenant")
	// ErrTransferNotFound is returned by status queries for an unknown transfer.
	ErrTransferNotFound = errors.New("transfer not found")
	// ErrUploadNotFound: Import of an upload that was never announced. Permanent.
	ErrUploadNotFound = errors.New("upload not found")
	// ErrTransferNotReady: Import of a parked upload (no listener-triggered yet).
	// Permanent for that task: listener-triggered schedules the upload again.
	ErrTransferNotReady = errors.New("transfer not ready: upload is parked")
	// ErrImportInProgress: another worker holds a live lease on the upload. Retry
	// later; if that worker died, its lease expires after Options.LeaseTTL.
	ErrImportInProgress = errors.New("import in progress elsewhere")
)

// Defaults of Options.
const (
	DefaultFinalLabel        = "final"
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultLeaseTTL          = 30 * time.Second
	// DefaultUnactedEventCap bounds the events a tenant can have stored without
	// their being acted on (unknown types, events of an uninstalled tenant):
	// enough to see what the platform sends, too few for a signing tenant to
	// grow the table without bound.
	DefaultUnactedEventCap = 1000
)

// Options configure a Machine. Zero values select the defaults.
type Options struct {
	// FinalLabel is the upload label after which the transfer is settled SUCCESS
	// (MIGRATION_FINAL_LABEL); default "final".
	FinalLabel string
	// Logger receives the machine's events; default slog.Default().
	Logger *slog.Logger
	// HeartbeatInterval is how often a running import renews its lease and checks
	// whether another process cancelled, failed or settled its transfer; default
	// 5 s. It bounds how long an import of another process keeps running after a
	// cancellation.
	HeartbeatInterval time.Duration
	// LeaseTTL is how long after its last heartbeat an import counts as abandoned
	// (its worker died) and may be taken over; default 30 s. It must be at least
	// twice HeartbeatInterval.
	LeaseTTL time.Duration
	// UnactedEventCap is how many events a tenant may have stored that are not
	// acted on (unknown types, events of an uninstalled tenant); beyond it such
	// events are acknowledged and counted in migration_event_drops, not stored.
	// Default DefaultUnactedEventCap.
	UnactedEventCap int
}

// Machine runs AMP transfers: it applies events to the transfer state in
// PostgreSQL under the transfer row's lock, so the outcome does not depend on the
// order or number of deliveries, and it imports uploads exactly once per s3Key.
// Several Machines (processes) may share one database. A Machine is safe for
// concurrent use.
type Machine struct {
	*Reader
	pool       *pgxpool.Pool
	amp        AMP
	importer   connectrelay.Importer
	sched      Scheduler
	finalLabel string
	log        *slog.Logger
	heartbeat  time.Duration
	leaseTTL   time.Duration
	unactedCap int

	mu      sync.Mutex
	running map[string]map[*runningImport]struct{} // by transfer ID
}

// NewMachine returns a Machine. It fails on a missing dependency or inconsistent
// options rather than at the first event.
func NewMachine(pool *pgxpool.Pool, amp AMP, importer connectrelay.Importer, sched Scheduler, opts Options) (*Machine, error) {
	switch {
	case pool == nil:
		return nil, errors.New("migration: NewMachine: nil pool")
	case amp == nil:
		return nil, errors.New("migration: NewMachine: nil AMP")
	case importer == nil:
		return nil, errors.New("migration: NewMachine: nil Importer")
	case sched == nil:
		return nil, errors.New("migration: NewMachine: nil Scheduler")
	}
	m := &Machine{
		Reader: NewReader(pool), pool: pool, amp: amp, importer: importer, sched: sched,
		finalLabel: opts.FinalLabel, log: opts.Logger,
		heartbeat: opts.HeartbeatInterval, leaseTTL: opts.LeaseTTL, unactedCap: opts.UnactedEventCap,
		running: make(map[string]map[*runningImport]struct{}),
	}
	if m.finalLabel == "" {
		m.finalLabel = DefaultFinalLabel
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.heartbeat <= 0 {
		m.heartbeat = DefaultHeartbeatInterval
	}
	if m.unactedCap <= 0 {
		m.unactedCap = DefaultUnactedEventCap
	}
	if m.leaseTTL <= 0 {
		m.leaseTTL = max(DefaultLeaseTTL, 2*m.heartbeat)
	}
	if m.leaseTTL < 2*m.heartbeat {
		return nil, fmt.Errorf("migration: NewMachine: LeaseTTL %v cannot be less than twice HeartbeatInterval %v", m.leaseTTL, m.heartbeat)
	}
	return m, nil
}

// errGuessedWrong ends an event's transaction that guessed its tenant was
// not uninstalled: it is rolled back and run again without the guess.
var errGuessedWrong = errors.New("tenant uninstalled: run again without guessing")

// afterCommit is what an event's transaction decided to do once committed: calls to
// other systems never happen while the transfer row is locked.
type afterCommit struct {
	schedule []UploadRef
	stop     bool // cancel this process's imports of the transfer
	settle   bool
	ready    bool // log "transfer ready" (listener-triggered of an open transfer)
}

// HandleEvent applies one event, delivered by the tenant clientKey (the JWT's
// iss), to its transfer. The event is recorded in migration_events whatever its
// type. For a known type the transfer is created on first sight and its row
// locked while the event is applied (see the package doc's transition table), so
// concurrent workers and any delivery order converge on the same state; an event
// of a type this service does not know is only recorded.
//
// Scheduling imports and settling happen after the commit. If they fail, the error
// is returned and a retry of the same event completes them: queued uploads are
// scheduled again and an owed settle call is made again. ErrTenantMismatch is
// returned (after recording the event) when clientKey is not the transfer's
// tenant, or when the event names client keys (ev.ClientKeys) and clientKey is not
// one of them. Errors wrap ErrInvalidEvent for an event that ParseEvent would not
// have returned.
func (m *Machine) HandleEvent(ctx context.Context, clientKey string, ev Event) error {
	if clientKey == "" {
		return errors.New("migration: handle event: empty client key")
	}
	if ev.Type == "" || (ev.Known() && ev.TransferID == "") {
		return fmt.Errorf("migration: handle event: %w: no type or transfer ID", ErrInvalidEvent)
	}
	if ev.Type == EventAppDataUploaded && ev.S3Key == "" {
		return fmt.Errorf("migration: handle event: %w: app-data-uploaded without s3Key", ErrInvalidEvent)
	}
	keys := ev.ClientKeys()
	tenantOK := len(keys) == 0 || slices.Contains(keys, clientKey)
	log := m.log.With(slog.String("client_key", clientKey), slog.String("transfer_id", ev.TransferID),
		slog.String("event_type", string(ev.Type)), slog.String("dedupe_key", ev.DedupeKey()))

	errDetails := json.RawMessage("null")
	if ev.Type == EventListenerErrored && tenantOK {
		// Fetched before the transaction: no network call while the row is locked.
		errDetails = m.fetchErrorDetails(ctx, log, clientKey, ev.TransferID)
	}

	var (
		ac          afterCommit
		rejected    error
		uninstalled bool
		first       bool
		dropped     int64
	)
	// The transaction is pipelined (see pipeTx). An event that will be acted
	// on if its tenant is not uninstalled (the common case) sends BEGIN, the
	// tenant read, the event's record and the transfer's creation and lock in
	// one round trip; then the transition's writes with the reads owed after
	// them and COMMIT. If the tenant turns out uninstalled, that transaction
	// is rolled back and the event runs again without the guess: the tenant
	// read alone first, then the unacted cap, then the record. An
	// app-data-uploaded reads its upload back before deciding on its label.
	attempt := func(guess bool) error {
		return inPipeTx(ctx, m.pool, func(p *pipeTx) error {
			ac, rejected, uninstalled, first, dropped = afterCommit{}, nil, false, false, 0
			var (
				installed, found bool
				eventID          int64
				t                connectrelay.Transfer
			)
			p.Queue(sqlTenantInstalled, clientKey).QueryRow(func(row pgx.Row) error {
				switch err := row.Scan(&installed); {
				case err == nil:
					found = true
				case !errors.Is(err, pgx.ErrNoRows):
					return fmt.Errorf("read tenant: %w", err)
				}
				return nil
			})
			record := func(act bool) {
				// An event to act on is recorded as handled at once; one
				// rejected after all (the transfer is another tenant's) is
				// marked again.
				sql := sqlRecordEvent
				if act {
					sql = sqlRecordHandledEvent
				}
				p.queryRow("record event", sql, []any{clientKey, ev.DedupeKey(), string(ev.Type), ev.TransferID,
					ev.MessageID, ev.S3Key, ev.Known(), string(rawEvent(ev))}, &eventID, &first)
				if act {
					lockTransfer(p, clientKey, ev, &t)
				}
			}
			if guess {
				record(true)
			}
			err := p.Flush(ctx)
			uninstalled = found && !installed
			switch {
			case guess && uninstalled:
				// Whatever the statements after the tenant read did, or
				// failed to do, is rolled back.
				return errGuessedWrong
			case err != nil:
				return err
			}
			act := ev.Known() && !uninstalled && tenantOK
			if !guess {
				if !ev.Known() || uninstalled {
					// Stored but not acted on: capped per tenant.
					var over bool
					p.exec("lock the tenant's unacted events", sqlLockUnacted, clientKey)
					p.queryRow("count the tenant's unacted events", sqlOverUnactedCap,
						[]any{clientKey, ev.DedupeKey(), m.unactedCap}, &over)
					if err := p.Flush(ctx); err != nil {
						return err
					}
					if over {
						p.queryRow("count the dropped event", sqlCountDrop, []any{clientKey}, &dropped)
						return p.Commit(ctx)
					}
				}
				record(act)
				if err := p.Flush(ctx); err != nil {
					return err
				}
			}
			outcome := "handled"
			switch {
			case uninstalled:
				// Its kept secret still verifies, but an uninstalled tenant's
				// migration is over: recorded, acknowledged, not acted on.
				outcome = "ignored"
			case !ev.Known():
				outcome = "unknown"
				if first {
					if err := outbox.Queue(p.Batch(), clientKey, connectrelay.EventMigrationEvent, ev.TransferID,
						outbox.Data{Raw: rawEvent(ev)}); err != nil {
						return err
					}
				}
			case !tenantOK:
				outcome = "rejected"
				rejected = fmt.Errorf("migration: %s of transfer %s from %s, migration belongs to %v: %w",
					ev.Type, ev.TransferID, clientKey, keys, ErrTenantMismatch)
			case t.ClientKey != clientKey:
				outcome = "rejected"
				rejected = fmt.Errorf("migration: %s of transfer %s from %s, transfer belongs to %s: %w",
					ev.Type, ev.TransferID, clientKey, t.ClientKey, ErrTenantMismatch)
			default:
				if err := m.apply(ctx, p, log, t, ev, errDetails, &ac); err != nil {
					return err
				}
			}
			if !act || outcome != "handled" {
				p.exec("mark event "+outcome, sqlMarkEvent, eventID, outcome)
			}
			return p.Commit(ctx)
		})
	}
	err := attempt(ev.Known() && tenantOK)
	if errors.Is(err, errGuessedWrong) {
		err = attempt(false)
	}
	if err != nil {
		return fmt.Errorf("migration: %s of transfer %s: %w", ev.Type, ev.TransferID, err)
	}
	if dropped > 0 {
		// Logged on the first drop of the tenant and then at every thousandth,
		// so a flood does not flood the logs too.
		if dropped == 1 || dropped%1000 == 0 {
			log.WarnContext(ctx, "migration event acknowledged but not stored: the tenant is over its cap of stored events not acted on",
				slog.Int("cap", m.unactedCap), slog.Int64("dropped", dropped))
		}
		return nil
	}
	if uninstalled {
		if first {
			log.WarnContext(ctx, "migration event of an uninstalled tenant recorded, not acted on")
		}
		return nil
	}
	if rejected != nil {
		log.WarnContext(ctx, "migration event rejected", slog.Any("error", rejected))
		return rejected
	}
	if !ev.Known() {
		log.InfoContext(ctx, "unknown migration event type recorded")
		return nil
	}
	if ac.ready {
		log.InfoContext(ctx, "transfer ready", slog.Int("queued_uploads", len(ac.schedule)))
	}
	if ac.stop {
		m.stopLocal(ev.TransferID, string(ev.Type))
	}
	var errs []error
	for _, ref := range ac.schedule {
		if err := m.sched.ScheduleImport(ctx, ref); err != nil {
			errs = append(errs, fmt.Errorf("migration: schedule import of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, err))
		}
	}
	switch {
	case ac.settle:
		// Sends the Forge message statuses owed too.
		if err := m.settle(ctx, ev.TransferID); err != nil {
			errs = append(errs, err)
		}
	case ev.ForgeType != "":
		if err := m.acknowledge(ctx, ev.TransferID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rawEvent is what is recorded of ev: the body as received, or, for an Event
// built by hand rather than by ParseEvent, what is known of it.
func rawEvent(ev Event) json.RawMessage {
	if len(ev.Raw) > 0 && json.Valid(ev.Raw) {
		return ev.Raw
	}
	b, _ := json.Marshal(map[string]any{"eventType": ev.Type, "transferId": ev.TransferID,
		"messageId": ev.MessageID, "s3Key": ev.S3Key, "label": ev.Label})
	return b
}

// lockTransfer queues the transfer's creation on first sight and the read
// that locks its row into t.
func lockTransfer(p *pipeTx, clientKey string, ev Event, t *connectrelay.Transfer) {
	details := ev.Details.Raw
	if len(details) == 0 || !json.Valid(details) {
		details = json.RawMessage("{}")
	}
	p.exec("create transfer", sqlCreateTransfer, ev.TransferID, clientKey, ev.Details.MigrationID, string(details))
	p.Queue(sqlLockTransfer, ev.TransferID).Fn = func(br pgx.BatchResults) error {
		var err error
		if *t, err = scanTransfer(br.QueryRow()); err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		return nil
	}
}

// apply queues the changes of the locked transfer t according to ev, with the
// method of ev's type, and learns whether a settle call is owed after the
// commit (whatever the event: a settle call still owed is made again), from t
// when ev's type does not change it, else by reading the row after the
// change. ac is filled in as the results arrive, complete once the
// transaction committed.
func (m *Machine) apply(ctx context.Context, p *pipeTx, log *slog.Logger, t connectrelay.Transfer, ev Event, errDetails json.RawMessage, ac *afterCommit) error {
	recordForgeMessage(p, ev)
	var err error
	switch ev.Type {
	case EventListenerTriggered:
		err = m.onListenerTriggered(ctx, p, log, t, ac)
	case EventAppDataUploaded:
		err = m.onAppDataUploaded(ctx, p, log, t, ev, ac)
	case EventTransferCancellationRequested:
		m.onCancellationRequested(ctx, p, log, t, ac)
	case EventListenerErrored:
		m.onListenerErrored(ctx, p, log, t, errDetails, ac)
	}
	if err != nil {
		return err
	}
	switch ev.Type {
	case EventListenerTriggered, EventAppDataUploaded:
		// Neither changes the transfer's settle state, and its row is
		// locked since t was read: what t says is what the row says.
		ac.settle = settlePending(t)
	default:
		p.queryRow("read settle state", sqlSettleOwed, []any{t.TransferID}, &ac.settle)
	}
	return nil
}

// onListenerTriggered: waiting -> ready; parked uploads are queued, and every
// queued upload is scheduled (again: scheduling may have failed after an earlier
// commit, and this retry makes up for it). A closed transfer ignores it.
func (m *Machine) onListenerTriggered(ctx context.Context, p *pipeTx, log *slog.Logger, t connectrelay.Transfer, ac *afterCommit) error {
	if t.Closed() {
		log.InfoContext(ctx, "listener-triggered for a closed transfer ignored", slog.String("state", string(t.State)))
		return nil
	}
	if t.State == connectrelay.TransferWaiting {
		p.exec("mark ready", sqlMarkReady, t.TransferID)
		if err := outbox.Queue(p.Batch(), t.ClientKey, connectrelay.EventTransferReady, t.TransferID, outbox.Data{}); err != nil {
			return err
		}
	}
	p.exec("queue parked uploads", sqlQueueParked, t.TransferID)
	p.query("list queued uploads", sqlListQueued, []any{t.TransferID}, func(r pgx.CollectableRow) error {
		ref := UploadRef{ClientKey: t.ClientKey, TransferID: t.TransferID}
		if err := r.Scan(&ref.S3Key, &ref.Label); err != nil {
			return err
		}
		ac.schedule = append(ac.schedule, ref)
		return nil
	})
	ac.ready = true // logged once committed, with the queued uploads
	return nil
}

// onAppDataUploaded records the upload once per s3Key: parked while the transfer
// waits, queued and scheduled once it is ready, skipped (never fetched) once it
// is closed. A repeat announces nothing new, except a label for an upload the
// product's list recorded without one.
func (m *Machine) onAppDataUploaded(ctx context.Context, p *pipeTx, log *slog.Logger, t connectrelay.Transfer, ev Event, ac *afterCommit) error {
	state, reason := UploadParked, ""
	switch {
	case t.Closed():
		state, reason = UploadSkipped, closedReason(t)
	case t.State == connectrelay.TransferReady:
		state = UploadQueued
	}
	var (
		cur   UploadState
		label string
	)
	p.exec("record upload", sqlRecordUpload, t.TransferID, ev.S3Key, ev.Label, state, reason)
	p.queryRow("read upload", sqlGetUpload, []any{t.TransferID, ev.S3Key}, &cur, &label)
	if err := p.Flush(ctx); err != nil {
		return err
	}
	if label == "" && ev.Label != "" && (cur == UploadParked || cur == UploadQueued) {
		// Recorded from the product's list (ReconcileStale), which has no
		// labels: its event, arriving before the import started, supplies it.
		p.exec("label upload", sqlLabelUpload, t.TransferID, ev.S3Key, ev.Label)
		label = ev.Label
	}
	if label != ev.Label {
		log.WarnContext(ctx, "upload announced again with another label; first label kept",
			slog.String("s3_key", ev.S3Key), slog.String("label", label), slog.String("new_label", ev.Label))
	}
	if cur == UploadQueued {
		ac.schedule = []UploadRef{{ClientKey: t.ClientKey, TransferID: t.TransferID, S3Key: ev.S3Key, Label: label}}
	}
	log.InfoContext(ctx, "upload recorded", slog.String("s3_key", ev.S3Key), slog.String("label", label),
		slog.String("upload_state", string(cur)))
	return nil
}

// onCancellationRequested: an open transfer -> cancelled, its waiting uploads
// skipped, INCOMPLETE owed; running imports are stopped in any case.
func (m *Machine) onCancellationRequested(ctx context.Context, p *pipeTx, log *slog.Logger, t connectrelay.Transfer, ac *afterCommit) {
	ac.stop = true
	if t.State.Final() {
		log.InfoContext(ctx, "cancellation of a finished transfer ignored", slog.String("state", string(t.State)))
		return
	}
	p.exec("mark cancelled", sqlMarkCancelled, t.TransferID)
	p.exec("skip open uploads", sqlSkipOpenUploads, t.TransferID, "transfer cancelled")
	log.InfoContext(ctx, "transfer cancelled")
}

// onListenerErrored: an open transfer -> failed with the listener's error
// details, its waiting uploads skipped, FAILED owed; a final transfer only keeps
// the details. Running imports are stopped in any case.
func (m *Machine) onListenerErrored(ctx context.Context, p *pipeTx, log *slog.Logger, t connectrelay.Transfer, errDetails json.RawMessage, ac *afterCommit) {
	ac.stop = true
	if t.State.Final() {
		p.exec("record error details", sqlRecordErrorDetails, t.TransferID, string(errDetails))
		log.InfoContext(ctx, "listener-errored for a finished transfer recorded", slog.String("state", string(t.State)))
		return
	}
	p.exec("mark failed", sqlMarkListenerErrored, t.TransferID, string(errDetails))
	p.exec("skip open uploads", sqlSkipOpenUploads, t.TransferID, "listener errored")
	log.WarnContext(ctx, "transfer failed: listener errored", slog.String("error_details", string(errDetails)))
}

// closedReason is the skip reason of an upload of the closed transfer t.
func closedReason(t connectrelay.Transfer) string {
	if t.State.Final() {
		return "transfer " + string(t.State)
	}
	return "transfer settled"
}

// skipOpenUploads marks the uploads that no import holds (parked, queued) skipped.
// Importing uploads are stopped by their worker, which marks them.
func skipOpenUploads(ctx context.Context, tx pgx.Tx, transferID, reason string) error {
	if _, err := tx.Exec(ctx, sqlSkipOpenUploads, transferID, reason); err != nil {
		return fmt.Errorf("skip open uploads: %w", err)
	}
	return nil
}

// fetchErrorDetails asks the product what the listener reported. Failing to learn
// it must not keep the transfer from failing and settling, so a failure is recorded
// in the details instead of returned.
func (m *Machine) fetchErrorDetails(ctx context.Context, log *slog.Logger, clientKey, transferID string) json.RawMessage {
	d, err := m.amp.ErrorDetails(ctx, clientKey, transferID)
	if err == nil && json.Valid(d) {
		return d
	}
	if err == nil {
		b, _ := json.Marshal(map[string]string{"unparsedErrorDetails": string(d)})
		return b
	}
	log.WarnContext(ctx, "could not fetch listener error details", slog.Any("error", err))
	b, _ := json.Marshal(map[string]string{"fetchError": err.Error()})
	return b
}

// runningImport is one import of this process that a cancellation can stop.
type runningImport struct{ cancel context.CancelCauseFunc }

// register makes the import stoppable by stopLocal; the returned func undoes it.
func (m *Machine) register(transferID string, cancel context.CancelCauseFunc) func() {
	ri := &runningImport{cancel: cancel}
	m.mu.Lock()
	set := m.running[transferID]
	if set == nil {
		set = make(map[*runningImport]struct{})
		m.running[transferID] = set
	}
	set[ri] = struct{}{}
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if set := m.running[transferID]; set != nil {
			delete(set, ri)
			if len(set) == 0 {
				delete(m.running, transferID)
			}
		}
	}
}

// stopLocal cancels this process's running imports of the transfer. Imports in
// other processes notice at their next heartbeat.
func (m *Machine) stopLocal(transferID, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ri := range m.running[transferID] {
		ri.cancel(fmt.Errorf("%w: %s", ErrTransferStopped, why))
	}
}
