package tasks

import (
	"context"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// resultPayload is the payload of migration:result.
type resultPayload struct {
	migration.UploadRef
	// Imported is the backend's verdict; Message its words, for a failure.
	Imported bool   `json:"imported"`
	Message  string `json:"message,omitempty"`
}

// MigrationResult enqueues the result the vendor's backend reported for an
// upload it was handed. The TaskID names the upload and the verdict, so a
// repeated report is one task.
func (e *Enqueuer) MigrationResult(ctx context.Context, ref migration.UploadRef, imported bool, message string) error {
	t, err := newTask(TypeMigrationResult, resultPayload{UploadRef: ref, Imported: imported, Message: message})
	if err != nil {
		return err
	}
	verdict := "failed"
	if imported {
		verdict = "imported"
	}
	_, err = e.enqueue(ctx, t, asynq.Queue(QueueMigration), asynq.TaskID("result:"+ref.TransferID+":"+ref.S3Key+":"+verdict),
		asynq.Retention(MigrationRetention), asynq.MaxRetry(MaxRetry))
	return err
}

// migrationResult records a reported result (see migration.Machine.ReportResult).
func (h *Handlers) migrationResult(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t, func(p *resultPayload) bool { return p.ClientKey != "" && p.TransferID != "" && p.S3Key != "" })
	if err != nil {
		return err
	}
	if h.d.Migration == nil {
		return notConfigured(t)
	}
	return permanent(h.d.Migration.ReportResult(ctx, p.UploadRef, p.Imported, p.Message))
}
