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
}

// Machine runs AMP transfers: it applies events to the transfer state in
// PostgreSQL under the transfer row's lock, so the outcome does not depend on the
// order or number of deliveries, and it imports uploads exactly once per s3Key.
// Several Machines (processes) may share one database. A Machine is safe for
// concurrent use.
type Machine struct {
	pool       *pgxpool.Pool
	amp        AMP
	importer   connectrelay.Importer
	sched      Scheduler
	finalLabel string
	log        *slog.Logger
	heartbeat  time.Duration
	leaseTTL   time.Duration

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
		pool: pool, amp: amp, importer: importer, sched: sched,
		finalLabel: opts.FinalLabel, log: opts.Logger,
		heartbeat: opts.HeartbeatInterval, leaseTTL: opts.LeaseTTL,
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
	if m.leaseTTL <= 0 {
		m.leaseTTL = max(DefaultLeaseTTL, 2*m.heartbeat)
	}
	if m.leaseTTL < 2*m.heartbeat {
		return nil, fmt.Errorf("migration: NewMachine: LeaseTTL %v cannot be less than twice HeartbeatInterval %v", m.leaseTTL, m.heartbeat)
	}
	return m, nil
}

// afterCommit is what an event's transaction decided to do once committed: calls to
// other systems never happen while the transfer row is locked.
type afterCommit struct {
	err      error // permanent outcome to return (the event is recorded)
	schedule []UploadRef
	stop     bool // cancel this process's imports of the transfer
	settle   bool
}

// HandleEvent applies one AMP event, delivered by the tenant clientKey (the JWT's
// iss), to its transfer. The event is recorded in migration_events whatever its
// type. For known types the transfer row is created on first sight and locked
// (SELECT ... FOR UPDATE) while the event is applied, so concurrent workers and any
// delivery order converge on the same state:
//
//   - listener-triggered: the transfer becomes ready; parked uploads are queued and
//     scheduled.
//   - app-data-uploaded: the upload is recorded once per s3Key: parked before
//     listener-triggered, queued and scheduled after it, skipped (never fetched)
//     once the transfer is cancelled, failed or settled.
//   - transfer-cancellation-requested: the transfer is cancelled, its running
//     imports are stopped and it is settled INCOMPLETE.
//   - listener-errored: the error details are fetched and recorded, the transfer
//     fails, its imports stop and it is settled FAILED.
//   - any other type: recorded only.
//
// Scheduling and settling happen after the commit. If they fail, the error is
// returned and a retry of the same event completes them: queued uploads are
// scheduled again and an owed settle call is made again. ErrTenantMismatch is
// returned (after recording the event) when clientKey is not the transfer's
// tenant, or when the event names client keys (ev.ClientKeys) and clientKey is not
// one of them.
func (m *Machine) HandleEvent(ctx context.Context, clientKey string, ev Event) error {
	if clientKey == "" {
		return errors.New("migration: HandleEvent: empty client key")
	}
	if ev.Type == "" || (ev.Known() && ev.TransferID == "") {
		return fmt.Errorf("migration: HandleEvent: %w: event without type or transfer ID", ErrInvalidEvent)
	}
	if ev.Type == EventAppDataUploaded && ev.S3Key == "" {
		return fmt.Errorf("migration: HandleEvent: %w: app-data-uploaded without s3Key", ErrInvalidEvent)
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

	var ac afterCommit
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		ac = afterCommit{}
		eventID, err := recordEvent(ctx, tx, clientKey, ev)
		if err != nil {
			return err
		}
		outcome := "handled"
		switch {
		case !ev.Known():
			outcome = "unknown"
		case !tenantOK:
			outcome = "rejected"
			ac.err = fmt.Errorf("migration: %s event for transfer %s from %s, migration belongs to %v: %w",
				ev.Type, ev.TransferID, clientKey, keys, ErrTenantMismatch)
		default:
			t, err := lockTransfer(ctx, tx, clientKey, ev)
			if err != nil {
				return err
			}
			if t.ClientKey != clientKey {
				outcome = "rejected"
				ac.err = fmt.Errorf("migration: %s event for transfer %s from %s, transfer belongs to %s: %w",
					ev.Type, ev.TransferID, clientKey, t.ClientKey, ErrTenantMismatch)
				break
			}
			if err := m.apply(ctx, tx, log, &ac, t, ev, errDetails); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE migration_events SET outcome = $2, handled_at = now() WHERE id = $1`,
			eventID, outcome); err != nil {
			return fmt.Errorf("mark event %s: %w", outcome, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migration: handle %s event for transfer %s: %w", ev.Type, ev.TransferID, err)
	}
	if ac.err != nil {
		log.WarnContext(ctx, "migration event rejected", slog.Any("error", ac.err))
		return ac.err
	}
	if !ev.Known() {
		log.InfoContext(ctx, "unknown migration event type recorded")
		return nil
	}
	if ac.stop {
		m.stopLocal(ev.TransferID, string(ev.Type))
	}
	var errs []error
	for _, ref := range ac.schedule {
		if err := m.sched.ScheduleImport(ctx, ref); err != nil {
			errs = append(errs, fmt.Errorf("migration: schedule import of %s (transfer %s): %w", ref.S3Key, ref.TransferID, err))
		}
	}
	if ac.settle {
		if err := m.settle(ctx, ev.TransferID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recordEvent inserts the event, or counts one more delivery of it.
func recordEvent(ctx context.Context, tx pgx.Tx, clientKey string, ev Event) (int64, error) {
	raw := ev.Raw
	if len(raw) == 0 || !json.Valid(raw) {
		// An Event built by hand rather than by ParseEvent: record what we know.
		b, err := json.Marshal(map[string]any{"eventType": ev.Type, "transferId": ev.TransferID,
			"messageId": ev.MessageID, "s3Key": ev.S3Key, "label": ev.Label})
		if err != nil {
			return 0, fmt.Errorf("encode event: %w", err)
		}
		raw = b
	}
	var id int64
	err := tx.QueryRow(ctx, `
		INSERT INTO migration_events (client_key, dedupe_key, event_type, transfer_id, message_id, s3_key, known, raw)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)
		ON CONFLICT (client_key, dedupe_key) DO UPDATE
		SET deliveries = migration_events.deliveries + 1, last_received_at = now()
		RETURNING id`,
		clientKey, ev.DedupeKey(), string(ev.Type), ev.TransferID, ev.MessageID, ev.S3Key, ev.Known(), string(raw),
	).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record event: %w", err)
	}
	return id, nil
}

// lockTransfer creates the transfer on first sight and locks its row.
func lockTransfer(ctx context.Context, tx pgx.Tx, clientKey string, ev Event) (connectrelay.Transfer, error) {
	details := ev.Details.Raw
	if len(details) == 0 || !json.Valid(details) {
		details = json.RawMessage("{}")
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO migration_transfers (transfer_id, client_key, migration_id, migration_details)
		VALUES ($1, $2, $3, $4::text::json)
		ON CONFLICT (transfer_id) DO NOTHING`,
		ev.TransferID, clientKey, ev.Details.MigrationID, string(details)); err != nil {
		return connectrelay.Transfer{}, fmt.Errorf("create transfer: %w", err)
	}
	t, err := scanTransfer(tx.QueryRow(ctx,
		`SELECT `+transferColumns+` FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE`, ev.TransferID))
	if err != nil {
		return connectrelay.Transfer{}, fmt.Errorf("lock transfer: %w", err)
	}
	return t, nil
}

// apply changes the locked transfer t according to ev.
func (m *Machine) apply(ctx context.Context, tx pgx.Tx, log *slog.Logger, ac *afterCommit, t connectrelay.Transfer, ev Event, errDetails json.RawMessage) error {
	switch ev.Type {
	case EventListenerTriggered:
		if t.Closed() {
			log.InfoContext(ctx, "listener-triggered for a closed transfer ignored", slog.String("state", string(t.State)))
			break
		}
		if t.State == connectrelay.TransferWaiting {
			if _, err := tx.Exec(ctx, `UPDATE migration_transfers SET state = 'ready', ready_at = now(), updated_at = now()
				WHERE transfer_id = $1`, t.TransferID); err != nil {
				return fmt.Errorf("mark ready: %w", err)
			}
			t.State = connectrelay.TransferReady
		}
		if _, err := tx.Exec(ctx, `UPDATE migration_uploads SET state = 'queued', updated_at = now()
			WHERE transfer_id = $1 AND state = 'parked'`, t.TransferID); err != nil {
			return fmt.Errorf("queue parked uploads: %w", err)
		}
		// Every queued upload, not only those queued just now: scheduling may have
		// failed after an earlier commit, and this retry must make up for it.
		rows, err := tx.Query(ctx, `SELECT s3_key, label FROM migration_uploads
			WHERE transfer_id = $1 AND state = 'queued' ORDER BY created_at, s3_key`, t.TransferID)
		if err != nil {
			return fmt.Errorf("list queued uploads: %w", err)
		}
		refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UploadRef, error) {
			ref := UploadRef{ClientKey: t.ClientKey, TransferID: t.TransferID}
			return ref, r.Scan(&ref.S3Key, &ref.Label)
		})
		if err != nil {
			return fmt.Errorf("list queued uploads: %w", err)
		}
		ac.schedule = refs
		log.InfoContext(ctx, "transfer ready", slog.Int("queued_uploads", len(refs)))

	case EventAppDataUploaded:
		state, reason := UploadParked, ""
		switch {
		case t.Closed():
			state, reason = UploadSkipped, closedReason(t)
		case t.State == connectrelay.TransferReady:
			state = UploadQueued
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO migration_uploads (transfer_id, s3_key, label, state, skip_reason)
			VALUES ($1, $2, $3, $4, nullif($5, ''))
			ON CONFLICT (transfer_id, s3_key) DO NOTHING`,
			t.TransferID, ev.S3Key, ev.Label, state, reason); err != nil {
			return fmt.Errorf("record upload: %w", err)
		}
		var cur UploadState
		var label string
		if err := tx.QueryRow(ctx, `SELECT state, label FROM migration_uploads WHERE transfer_id = $1 AND s3_key = $2`,
			t.TransferID, ev.S3Key).Scan(&cur, &label); err != nil {
			return fmt.Errorf("read upload: %w", err)
		}
		if label == "" && ev.Label != "" && (cur == UploadParked || cur == UploadQueued) {
			// Recorded from the product's list (ReconcileStale), which has no
			// labels: its event, arriving before the import started, supplies it.
			if _, err := tx.Exec(ctx, `UPDATE migration_uploads SET label = $3, updated_at = now()
				WHERE transfer_id = $1 AND s3_key = $2`, t.TransferID, ev.S3Key, ev.Label); err != nil {
				return fmt.Errorf("label upload: %w", err)
			}
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

	case EventTransferCancellationRequested:
		if !t.State.Final() {
			if _, err := tx.Exec(ctx, `UPDATE migration_transfers SET state = 'cancelled', finished_at = now(), updated_at = now(),
				settle_status = CASE WHEN settled_at IS NULL THEN 'INCOMPLETE' ELSE settle_status END
				WHERE transfer_id = $1`, t.TransferID); err != nil {
				return fmt.Errorf("mark cancelled: %w", err)
			}
			if err := skipOpenUploads(ctx, tx, t.TransferID, "transfer cancelled"); err != nil {
				return err
			}
			log.InfoContext(ctx, "transfer cancelled")
		} else {
			log.InfoContext(ctx, "cancellation of a finished transfer ignored", slog.String("state", string(t.State)))
		}
		ac.stop = true

	case EventListenerErrored:
		if !t.State.Final() {
			if _, err := tx.Exec(ctx, `UPDATE migration_transfers SET state = 'failed', finished_at = now(), updated_at = now(),
				error_details = $2::text::json,
				settle_status = CASE WHEN settled_at IS NULL THEN 'FAILED' ELSE settle_status END
				WHERE transfer_id = $1`, t.TransferID, string(errDetails)); err != nil {
				return fmt.Errorf("mark failed: %w", err)
			}
			if err := skipOpenUploads(ctx, tx, t.TransferID, "listener errored"); err != nil {
				return err
			}
			log.WarnContext(ctx, "transfer failed: listener errored", slog.String("error_details", string(errDetails)))
		} else {
			// Keep the details for operators; the transfer's fate is already decided.
			if _, err := tx.Exec(ctx, `UPDATE migration_transfers SET error_details = $2::text::json, updated_at = now()
				WHERE transfer_id = $1 AND error_details IS NULL`, t.TransferID, string(errDetails)); err != nil {
				return fmt.Errorf("record error details: %w", err)
			}
			log.InfoContext(ctx, "listener-errored for a finished transfer recorded", slog.String("state", string(t.State)))
		}
		ac.stop = true
	}
	// Whatever the event, a settle call still owed is made (again) after commit.
	var pending bool
	if err := tx.QueryRow(ctx, `SELECT settle_status IS NOT NULL AND settled_at IS NULL FROM migration_transfers
		WHERE transfer_id = $1`, t.TransferID).Scan(&pending); err != nil {
		return fmt.Errorf("read settle state: %w", err)
	}
	ac.settle = pending
	return nil
}

func closedReason(t connectrelay.Transfer) string {
	if t.State.Final() {
		return "transfer " + string(t.State)
	}
	return "transfer settled"
}

// skipOpenUploads marks the uploads that no import holds (parked, queued) skipped.
// Importing uploads are stopped by their worker, which marks them.
func skipOpenUploads(ctx context.Context, tx pgx.Tx, transferID, reason string) error {
	if _, err := tx.Exec(ctx, `UPDATE migration_uploads SET state = 'skipped', skip_reason = $2, updated_at = now()
		WHERE transfer_id = $1 AND state IN ('parked', 'queued')`, transferID, reason); err != nil {
		return fmt.Errorf("skip open uploads: %w", err)
	}
	return nil
}

// fetchErrorDetails asks the product what the listener reported. Failing to learn
// it must not keep the transfer from failing and settling, so a failure is recorded
// in the details instead of returned; only a cancelled ctx is not recorded (the
// transaction fails with it anyway and the event is retried).
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

// settleClaimTTL is how long a settle claim keeps other workers from making the
// same settle call. settleCallTimeout bounds the call itself (with the AMP
// client's retries) well within the claim, so that a claim never expires while its
// call is still running: two settle calls for one transfer are never in flight at
// once. A worker that dies mid-call leaves its claim to expire; SettlePending then
// makes the call again.
const (
	settleClaimTTL    = 3 * time.Minute
	settleCallTimeout = settleClaimTTL - 30*time.Second
)

// settle makes the settle call the transfer owes, if any. The product's "already
// settled" and "expired" answers are final and recorded as such. Any other failure
// is recorded on the transfer and returned, so that the task is retried; every
// later event or import of the transfer tries again too, and so does
// SettlePending.
//
// No lock or transaction is held during the call: it is an HTTP call that may be
// retried for minutes, and the AMP implementation itself needs database
// connections (the tenant's URL and secret). Instead one short statement claims
// the call (settle_claimed_until) and commits; the call is made; a second short
// statement records the result and clears the claim. Workers racing to settle one
// transfer (an import completing it while a duplicate event arrives) therefore make
// one call between them: the others find it claimed, or settled, and return nil.
func (m *Machine) settle(ctx context.Context, transferID string) error {
	var (
		clientKey, status string
		percent           int
		message           *string
		claim             time.Time
	)
	err := m.pool.QueryRow(ctx, `UPDATE migration_transfers
		SET settle_claimed_until = now() + $2 * interval '1 millisecond'
		WHERE transfer_id = $1 AND settle_status IS NOT NULL AND settled_at IS NULL
			AND (settle_claimed_until IS NULL OR settle_claimed_until <= now())
		RETURNING client_key, settle_status, last_percent, settle_message, settle_claimed_until`,
		transferID, settleClaimTTL.Milliseconds()).Scan(&clientKey, &status, &percent, &message, &claim)
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing owed (open, or settled), or another worker is making the call.
		return nil
	}
	if err != nil {
		return fmt.Errorf("migration: settle transfer %s: claim the settle call: %w", transferID, err)
	}
	p := settleProgress(status, percent, message)
	log := m.log.With(slog.String("client_key", clientKey), slog.String("transfer_id", transferID),
		slog.String("status", p.Status))

	callCtx, cancel := context.WithTimeout(ctx, settleCallTimeout)
	rerr := m.amp.ReportProgress(callCtx, clientKey, transferID, p)
	cancel()

	// Recorded even when the caller is going away: a result the product gave
	// must not be lost, and a failed call must give its claim back at once.
	bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer bcancel()
	var (
		result  = connectrelay.SettleReported
		errText *string
	)
	switch {
	case rerr == nil:
	case errors.Is(rerr, product.ErrTransferSettled):
		result = connectrelay.SettleAlreadySettled
	case errors.Is(rerr, product.ErrTransferExpired):
		result = connectrelay.SettleExpired
		e := redactSecrets(rerr.Error())
		errText = &e
	default:
		log.WarnContext(ctx, "settle call failed", slog.Any("error", rerr))
		if _, err := m.pool.Exec(bctx, `UPDATE migration_transfers SET settle_error = $2,
			settle_claimed_until = NULL, updated_at = now()
			WHERE transfer_id = $1 AND settled_at IS NULL AND settle_claimed_until = $3`,
			transferID, redactSecrets(rerr.Error()), claim); err != nil {
			rerr = errors.Join(rerr, fmt.Errorf("record the failure: %w", err))
		}
		return fmt.Errorf("migration: settle transfer %s %s: %w", transferID, status, rerr)
	}
	if _, err := m.pool.Exec(bctx, `UPDATE migration_transfers SET settled_at = now(), settle_result = $2,
		settle_error = $3, settle_claimed_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND settled_at IS NULL`, transferID, result, errText); err != nil {
		// The claim expires and the call is made again; the product then answers
		// "already settled", which is recorded.
		return fmt.Errorf("migration: settle transfer %s %s: record %s: %w", transferID, status, result, err)
	}
	if result == connectrelay.SettleExpired {
		log.WarnContext(ctx, "transfer expired before it could be settled; recorded as final", slog.Any("error", rerr))
		return nil
	}
	log.InfoContext(ctx, "transfer settled", slog.String("result", result))
	return nil
}

// settleProgress is the settle call's body for the status the transfer settles
// with; message, when recorded, replaces the status's default message.
func settleProgress(status string, lastPercent int, message *string) product.Progress {
	p := product.Progress{Status: status, Percent: lastPercent}
	switch status {
	case product.StatusSuccess:
		p.Percent, p.Message = 100, "all uploaded data imported"
	case product.StatusIncomplete:
		p.Message = "transfer cancelled on request"
	case product.StatusFailed:
		p.Message = "server-side migration listener errored"
	}
	if message != nil && *message != "" {
		p.Message = *message
	}
	return p
}

// markSettledByProduct records that the product said the transfer is settled when
// we did not settle it (an IN_PROGRESS, data or list call answered 403): final, so
// open uploads are skipped and this process's imports stop. The record is written
// under a context detached from ctx (bounded by bookkeepingTimeout), like the other
// writes that follow a call's outcome: a worker shutting down still records it.
func (m *Machine) markSettledByProduct(ctx context.Context, transferID string) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	err := pgx.BeginFunc(bctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(bctx, `UPDATE migration_transfers SET settled_at = now(), settle_result = 'already_settled',
			updated_at = now() WHERE transfer_id = $1 AND settled_at IS NULL`, transferID); err != nil {
			return err
		}
		return skipOpenUploads(bctx, tx, transferID, "transfer settled")
	})
	if err != nil {
		return fmt.Errorf("migration: record transfer %s settled by the product: %w", transferID, err)
	}
	m.stopLocal(transferID, "settled by the product")
	return nil
}
