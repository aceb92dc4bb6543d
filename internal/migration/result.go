package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay"
)

// ErrUploadNotPending is returned by ReportResult for an upload that is not
// waiting for a result: it was not handed over, or it is being imported again.
var ErrUploadNotPending = errors.New("upload is not waiting for a result")

// ErrUploadHandingOver is returned by ReportResult for an upload still being
// imported: a backend may report its result as soon as it answered 202 to
// migration.upload_ready, before the worker that sent it has recorded the
// hand-over. It is transient: the caller retries, and the result applies once
// the upload waits for it.
var ErrUploadHandingOver = errors.New("upload is still being handed over")

// ReportResult records the result of an upload that the Importer handed over
// (connectrelay.ErrImportPending). imported makes it imported, its size and
// SHA-256 unknown, and completes the transfer as an import does; !imported fails
// it with message, as FailUpload does. Reporting the same result again is a
// no-op. Errors wrap ErrUploadNotFound (no such upload of ref.ClientKey's),
// ErrUploadHandingOver (retry), ErrUploadNotPending, or a database failure.
func (m *Machine) ReportResult(ctx context.Context, ref UploadRef, imported bool, message string) error {
	t, err := scanTransfer(m.pool.QueryRow(ctx, sqlGetTransfer, ref.TransferID, ref.ClientKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("migration: result of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, ErrUploadNotFound)
	}
	if err != nil {
		return fmt.Errorf("migration: result of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, err)
	}
	var (
		state UploadState
		label string
	)
	err = m.pool.QueryRow(ctx, sqlGetUpload, ref.TransferID, ref.S3Key).Scan(&state, &label)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("migration: result of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, ErrUploadNotFound)
	}
	if err != nil {
		return fmt.Errorf("migration: result of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, err)
	}
	switch {
	case imported && state == UploadImported, !imported && state == UploadFailed:
		return nil
	case state == UploadImporting:
		return fmt.Errorf("migration: result of upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, ErrUploadHandingOver)
	case state != UploadPending:
		return fmt.Errorf("migration: result of upload %q of transfer %s (%s): %w", ref.S3Key, ref.TransferID, state, ErrUploadNotPending)
	}
	log := m.log.With(slog.String("client_key", t.ClientKey), slog.String("transfer_id", ref.TransferID),
		slog.String("s3_key", ref.S3Key), slog.String("label", label))
	if !imported {
		return m.FailUpload(ctx, ref, fmt.Errorf("%w: the backend reported: %s", connectrelay.ErrImportFailed, message))
	}
	log.InfoContext(ctx, "the backend reported the upload imported")
	return m.finishImport(ctx, log, ref, importClaim{transfer: t, label: label}, nil, nil)
}
