package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

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
	// UploadPending: the Importer handed the upload over (ErrImportPending); its
	// result is reported later (Machine.ReportResult). The stale-upload sweep
	// schedules it again if no result comes.
	UploadPending UploadState = "pending"
	// UploadImported: the Importer returned nil (or its result said imported);
	// size and SHA-256 are recorded when the data passed through this service.
	// Final.
	UploadImported UploadState = "imported"
	// UploadSkipped: the transfer was cancelled, failed or settled first. Final.
	UploadSkipped UploadState = "skipped"
	// UploadFailed: its import task gave up (a permanent error, or its retries
	// were exhausted; see Machine.FailUpload), and the transfer failed with it.
	// Final.
	UploadFailed UploadState = "failed"
)

// settlePending reports whether a settle call is owed to the product for t.
func settlePending(t connectrelay.Transfer) bool { return t.SettleStatus != "" && t.SettledAt.IsZero() }

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

func scanTransfer(row pgx.Row) (connectrelay.Transfer, error) {
	var (
		t                              connectrelay.Transfer
		details                        string
		errDetails                     *string
		settledAt, readyAt, finishedAt *time.Time
	)
	if err := row.Scan(&t.TransferID, &t.ClientKey, &details, &t.State,
		&t.SettleStatus, &settledAt, &t.SettleResult, &t.SettleError,
		&t.SettleMessage, &t.LastPercent, &errDetails, &t.CreatedAt, &t.UpdatedAt, &readyAt, &finishedAt); err != nil {
		return connectrelay.Transfer{}, err
	}
	if d, err := parseDetails(json.RawMessage(details)); err == nil {
		t.Details = d
	} else {
		t.Details = connectrelay.MigrationDetails{Raw: json.RawMessage(details)}
	}
	if errDetails != nil {
		t.ErrorDetails = json.RawMessage(*errDetails)
	}
	t.SettledAt, t.ReadyAt, t.FinishedAt = deref(settledAt), deref(readyAt), deref(finishedAt)
	return t, nil
}

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

// connectrelay.Transfer returns one transfer of a tenant, for operators and status pages. A
// transfer of another tenant is reported as not found (ErrTransferNotFound), so a
// tenant-scoped caller never learns about other tenants' transfers.
// Reader reads transfers and uploads, for operators, status pages and the
// internal API; the Machine embeds one. It is safe for concurrent use.
type Reader struct {
	pool *pgxpool.Pool
}

// NewReader returns a Reader over pool.
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// Upload returns one upload and its transfer. Errors wrap ErrUploadNotFound.
func (r *Reader) Upload(ctx context.Context, transferID, s3Key string) (connectrelay.Transfer, Upload, error) {
	t, err := scanTransfer(r.pool.QueryRow(ctx, sqlGetTransferByID, transferID))
	if err == nil {
		var u Upload
		u, err = scanUpload(r.pool.QueryRow(ctx, sqlGetUploadRow, transferID, s3Key))
		if err == nil {
			return t, u, nil
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.Transfer{}, Upload{}, fmt.Errorf("migration: upload %q of transfer %s: %w", s3Key, transferID, ErrUploadNotFound)
	}
	return connectrelay.Transfer{}, Upload{}, fmt.Errorf("migration: upload %q of transfer %s: %w", s3Key, transferID, err)
}

func (r *Reader) Transfer(ctx context.Context, clientKey, transferID string) (connectrelay.Transfer, error) {
	t, err := scanTransfer(r.pool.QueryRow(ctx, sqlGetTransfer, transferID, clientKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.Transfer{}, fmt.Errorf("migration: transfer %s of %s: %w", transferID, clientKey, ErrTransferNotFound)
	}
	if err != nil {
		return connectrelay.Transfer{}, fmt.Errorf("migration: load transfer %s: %w", transferID, err)
	}
	return t, nil
}

// Uploads returns the uploads of a transfer in the order they were announced, for
// operators following a transfer. An unknown transfer has no uploads.
func (r *Reader) Uploads(ctx context.Context, transferID string) ([]Upload, error) {
	rows, err := r.pool.Query(ctx, sqlListUploads, transferID)
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
func (r *Reader) Transfers(ctx context.Context, clientKey string, limit int) ([]connectrelay.Transfer, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	rows, err := r.pool.Query(ctx, sqlListTransfers, clientKey, limit)
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers of %s: %w", clientKey, err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (connectrelay.Transfer, error) { return scanTransfer(r) })
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers of %s: %w", clientKey, err)
	}
	return ts, nil
}
