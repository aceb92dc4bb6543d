package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// State is a transfer's state in this service.
type State string

// Transfer states. Waiting and Ready are open; the others are final and make every
// later upload of the transfer skipped.
const (
	// StateWaiting: the transfer was seen but listener-triggered was not; uploads
	// are parked.
	StateWaiting State = "waiting"
	// StateReady: listener-triggered was recorded; uploads are imported.
	StateReady State = "ready"
	// StateCancelled: transfer-cancellation-requested; settled INCOMPLETE.
	StateCancelled State = "cancelled"
	// StateSucceeded: the final-labelled upload and every other known upload were
	// imported, and the product listed no upload that was not; settled SUCCESS.
	StateSucceeded State = "succeeded"
	// StateFailed: listener-errored, an upload failed (Machine.FailUpload), or
	// the transfer's completion could not be confirmed (Machine.ReconcileStale
	// gave up, or the product answered that it expired); settled FAILED.
	StateFailed State = "failed"
)

// Final reports whether no more imports happen in this state.
func (s State) Final() bool {
	return s == StateCancelled || s == StateSucceeded || s == StateFailed
}

// UploadState is the state of one uploaded file (s3Key) of a transfer.
type UploadState string

// Upload states.
const (
	// UploadParked: announced before listener-triggered; queued when it arrives.
	UploadParked UploadState = "parked"
	// UploadQueued: an import task is scheduled (or its scheduling is being retried).
	UploadQueued UploadState = "queued"
	// UploadImporting: an import holds the upload's lease, or held it and died.
	UploadImporting UploadState = "importing"
	// UploadImported: the Importer returned nil; size and SHA-256 are recorded. Final.
	UploadImported UploadState = "imported"
	// UploadSkipped: the transfer was cancelled, failed or settled first. Final.
	UploadSkipped UploadState = "skipped"
	// UploadFailed: its import task gave up (a permanent error, or its retries
	// were exhausted; see Machine.FailUpload), and the transfer failed with it.
	// Final.
	UploadFailed UploadState = "failed"
)

// Progress statuses of AMP's progress API.
const (
	StatusInProgress = "IN_PROGRESS"
	StatusSuccess    = "SUCCESS"
	StatusIncomplete = "INCOMPLETE"
	StatusFailed     = "FAILED"
)

// Settle results recorded in Transfer.SettleResult.
const (
	// SettleReported: the product accepted our settle call.
	SettleReported = "reported"
	// SettleAlreadySettled: the product answered that the transfer was already
	// settled (403); final, never retried.
	SettleAlreadySettled = "already_settled"
	// SettleExpired: the product answered our settle call that the transfer is
	// past AMP's 14-day window (ErrTransferExpired); final, never retried.
	// Transfer.SettleError keeps the answer.
	SettleExpired = "expired"
)

// Transfer is an AMP transfer as this service tracks it: what operators see and
// what an Importer is given.
type Transfer struct {
	TransferID string           `json:"transferId"`
	ClientKey  string           `json:"clientKey"`
	Details    MigrationDetails `json:"migrationDetails"`
	State      State            `json:"state"`
	// SettleStatus is the status this service settles (or settled) with: SUCCESS,
	// INCOMPLETE or FAILED; "" while the transfer is open.
	SettleStatus string `json:"settleStatus,omitempty"`
	// SettledAt is when the product was known to be settled; zero while a settle
	// call is still owed (SettleStatus set) or none is due.
	SettledAt    time.Time `json:"settledAt,omitzero"`
	SettleResult string    `json:"settleResult,omitempty"`
	SettleError  string    `json:"settleError,omitempty"`
	// SettleMessage is the message sent with the settle status when it is not
	// the status's default one: a failed upload names itself, and a transfer
	// failed by Machine.ReconcileStale names the reason.
	SettleMessage string          `json:"settleMessage,omitempty"`
	LastPercent   int             `json:"lastPercent"`
	ErrorDetails  json.RawMessage `json:"errorDetails,omitempty"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	ReadyAt       time.Time       `json:"readyAt,omitzero"`
	FinishedAt    time.Time       `json:"finishedAt,omitzero"`
}

// Closed reports whether the transfer takes no more imports: it reached a final
// state, or the product said it is settled.
func (t Transfer) Closed() bool { return t.State.Final() || !t.SettledAt.IsZero() }

// settlePending reports whether a settle call is owed to the product.
func (t Transfer) settlePending() bool { return t.SettleStatus != "" && t.SettledAt.IsZero() }

// Upload is one uploaded file of a transfer.
type Upload struct {
	TransferID string      `json:"transferId"`
	S3Key      string      `json:"s3Key"`
	Label      string      `json:"label"`
	State      UploadState `json:"state"`
	SizeBytes  int64       `json:"sizeBytes,omitempty"`
	SHA256     string      `json:"sha256,omitempty"`
	Attempts   int         `json:"attempts"`
	LastError  string      `json:"lastError,omitempty"`
	SkipReason string      `json:"skipReason,omitempty"`
	CreatedAt  time.Time   `json:"createdAt"`
	UpdatedAt  time.Time   `json:"updatedAt"`
	StartedAt  time.Time   `json:"startedAt,omitzero"`
	ImportedAt time.Time   `json:"importedAt,omitzero"`
	// LeaseUntil is when a running import's lease expires; zero when none runs.
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
}

const transferColumns = `transfer_id, client_key, migration_details::text, state,
	coalesce(settle_status, ''), settled_at, coalesce(settle_result, ''), coalesce(settle_error, ''),
	coalesce(settle_message, ''), last_percent, error_details::text, created_at, updated_at, ready_at, finished_at`

func scanTransfer(row pgx.Row) (Transfer, error) {
	var (
		t                              Transfer
		details                        string
		errDetails                     *string
		settledAt, readyAt, finishedAt *time.Time
	)
	if err := row.Scan(&t.TransferID, &t.ClientKey, &details, &t.State,
		&t.SettleStatus, &settledAt, &t.SettleResult, &t.SettleError,
		&t.SettleMessage, &t.LastPercent, &errDetails, &t.CreatedAt, &t.UpdatedAt, &readyAt, &finishedAt); err != nil {
		return Transfer{}, err
	}
	if d, err := parseDetails(json.RawMessage(details)); err == nil {
		t.Details = d
	} else {
		t.Details = MigrationDetails{Raw: json.RawMessage(details)}
	}
	if errDetails != nil {
		t.ErrorDetails = json.RawMessage(*errDetails)
	}
	t.SettledAt, t.ReadyAt, t.FinishedAt = deref(settledAt), deref(readyAt), deref(finishedAt)
	return t, nil
}

const uploadColumns = `transfer_id, s3_key, label, state, coalesce(size_bytes, 0), coalesce(sha256, ''),
	attempts, coalesce(last_error, ''), coalesce(skip_reason, ''), created_at, updated_at,
	started_at, imported_at, lease_until`

func scanUpload(row pgx.Row) (Upload, error) {
	var (
		u                               Upload
		startedAt, importedAt, leaseEnd *time.Time
	)
	if err := row.Scan(&u.TransferID, &u.S3Key, &u.Label, &u.State, &u.SizeBytes, &u.SHA256,
		&u.Attempts, &u.LastError, &u.SkipReason, &u.CreatedAt, &u.UpdatedAt,
		&startedAt, &importedAt, &leaseEnd); err != nil {
		return Upload{}, err
	}
	u.StartedAt, u.ImportedAt, u.LeaseUntil = deref(startedAt), deref(importedAt), deref(leaseEnd)
	return u, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// Transfer returns one transfer of a tenant, for operators and status pages. A
// transfer of another tenant is reported as not found (ErrTransferNotFound), so a
// tenant-scoped caller never learns about other tenants' transfers.
func (m *Machine) Transfer(ctx context.Context, clientKey, transferID string) (Transfer, error) {
	t, err := scanTransfer(m.pool.QueryRow(ctx,
		`SELECT `+transferColumns+` FROM migration_transfers WHERE transfer_id = $1 AND client_key = $2`,
		transferID, clientKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return Transfer{}, fmt.Errorf("migration: transfer %s of %s: %w", transferID, clientKey, ErrTransferNotFound)
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("migration: load transfer %s: %w", transferID, err)
	}
	return t, nil
}

// Uploads returns the uploads of a transfer in the order they were announced, for
// operators following a transfer. An unknown transfer has no uploads.
func (m *Machine) Uploads(ctx context.Context, transferID string) ([]Upload, error) {
	rows, err := m.pool.Query(ctx,
		`SELECT `+uploadColumns+` FROM migration_uploads WHERE transfer_id = $1 ORDER BY created_at, s3_key`,
		transferID)
	if err != nil {
		return nil, fmt.Errorf("migration: list uploads of %s: %w", transferID, err)
	}
	us, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Upload, error) { return scanUpload(r) })
	if err != nil {
		return nil, fmt.Errorf("migration: list uploads of %s: %w", transferID, err)
	}
	return us, nil
}

// DefaultListLimit and MaxListLimit bound Transfers.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// Transfers returns a tenant's most recent transfers, newest first. limit <= 0
// means DefaultListLimit; it is capped at MaxListLimit.
func (m *Machine) Transfers(ctx context.Context, clientKey string, limit int) ([]Transfer, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	rows, err := m.pool.Query(ctx,
		`SELECT `+transferColumns+` FROM migration_transfers WHERE client_key = $1
		 ORDER BY created_at DESC, transfer_id LIMIT $2`, clientKey, limit)
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers of %s: %w", clientKey, err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Transfer, error) { return scanTransfer(r) })
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers of %s: %w", clientKey, err)
	}
	return ts, nil
}
