package migration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RecordingImporter is the bundled reference Importer: it reads an upload to the
// end and records its label, size and SHA-256 in migration_imported_data, so the
// whole pipeline runs, and can be checked, before a vendor plugs in their own.
//
// It is idempotent per (transfer, s3Key): the record is written with ON CONFLICT
// DO NOTHING, so the re-run that follows a crash between a successful import and
// the machine's "imported" mark leaves exactly one record (the first).
type RecordingImporter struct {
	pool *pgxpool.Pool
}

var _ connectrelay.Importer = (*RecordingImporter)(nil)

// NewRecordingImporter returns a RecordingImporter writing to pool's database.
func NewRecordingImporter(pool *pgxpool.Pool) *RecordingImporter {
	return &RecordingImporter{pool: pool}
}

// Import reads req.Data to the end, hashing it in a fixed-size buffer, and records
// it under (transfer, s3Key); a second record of the same upload is a no-op.
func (r *RecordingImporter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	h := sha256.New()
	n, err := io.Copy(h, req.Data)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if _, err := r.pool.Exec(ctx, sqlRecordImportedData, req.Transfer.TransferID, req.S3Key, req.Transfer.ClientKey, req.Label, n, hex.EncodeToString(h.Sum(nil))); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// ImportedRecord is what RecordingImporter recorded for one upload.
type ImportedRecord struct {
	TransferID string    `json:"transferId"`
	S3Key      string    `json:"s3Key"`
	ClientKey  string    `json:"clientKey"`
	Label      string    `json:"label"`
	SizeBytes  int64     `json:"sizeBytes"`
	SHA256     string    `json:"sha256"`
	ImportedAt time.Time `json:"importedAt"`
}

// Records returns what was recorded for a transfer, for operators checking a
// migration end to end (and for tests).
func (r *RecordingImporter) Records(ctx context.Context, transferID string) ([]ImportedRecord, error) {
	rows, err := r.pool.Query(ctx, sqlListImportedData, transferID)
	if err != nil {
		return nil, fmt.Errorf("recording importer: list records of %s: %w", transferID, err)
	}
	recs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ImportedRecord])
	if err != nil {
		return nil, fmt.Errorf("recording importer: list records of %s: %w", transferID, err)
	}
	return recs, nil
}
