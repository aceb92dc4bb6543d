package migration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/migration"
)

func ExampleParseEvent() {
	body := []byte(`{"eventType":"app-data-uploaded","transferId":"2e170ff3","s3Key":"a1/b2","label":"final",
		"migrationDetails":{"migrationId":"fd2b0ea1","jiraClientKey":"jira-1","confluenceClientKey":"unknown"}}`)
	ev, err := migration.ParseEvent(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Type, ev.TransferID, ev.S3Key, ev.Label, ev.Known())
	fmt.Println(ev.ClientKeys())
	fmt.Println(ev.DedupeKey()[:len("content:")])

	_, err = migration.ParseEvent([]byte(`{"eventType":"listener-triggered"}`))
	fmt.Println(errors.Is(err, migration.ErrInvalidEvent))
	// Output:
	// app-data-uploaded 2e170ff3 a1/b2 final true
	// [jira-1]
	// content:
	// true
}

// issueImporter is a vendor's MigrationImporter: it decodes the uploaded JSON
// lines as they stream in and upserts each issue keyed by (transfer, s3Key, id),
// which is what makes a re-run after a crash harmless.
type issueImporter struct {
	pool *pgxpool.Pool
}

func (i issueImporter) Import(ctx context.Context, t migration.Transfer, label, s3Key string, data io.Reader) error {
	dec := json.NewDecoder(data)
	for {
		var issue struct {
			ID      string `json:"id"`
			Summary string `json:"summary"`
		}
		if err := dec.Decode(&issue); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("decode %s: %w", s3Key, err)
		}
		if _, err := i.pool.Exec(ctx, `INSERT INTO vendor_issues (transfer_id, s3_key, id, summary)
			VALUES ($1, $2, $3, $4) ON CONFLICT (transfer_id, s3_key, id) DO UPDATE SET summary = EXCLUDED.summary`,
			t.TransferID, s3Key, issue.ID, issue.Summary); err != nil {
			return fmt.Errorf("store issue %s: %w", issue.ID, err)
		}
	}
}

// Wiring a vendor importer into the worker: the AMP client and the scheduler come
// from the amp and tasks packages.
func ExampleNewMachine() {
	var (
		pool  *pgxpool.Pool       // schema.Open + schema.Migrate
		amp   migration.AMP       // the amp package's client
		sched migration.Scheduler // the tasks package's enqueuer
	)
	m, err := migration.NewMachine(pool, amp, issueImporter{pool: pool}, sched, migration.Options{
		FinalLabel: "final", // MIGRATION_FINAL_LABEL
		Logger:     slog.Default(),
	})
	if err != nil {
		panic(err)
	}
	// migration:event task handler:
	handleEvent := func(ctx context.Context, clientKey string, body []byte) error {
		ev, err := migration.ParseEvent(body)
		if err != nil {
			return err // permanent: do not retry
		}
		return m.HandleEvent(ctx, clientKey, ev)
	}
	// migration:import task handler:
	handleImport := func(ctx context.Context, ref migration.UploadRef) error {
		return m.Import(ctx, ref)
	}
	// When an import task will never run again (a permanent error, or its last
	// retry failed), its transfer fails instead of hanging:
	importGaveUp := func(ctx context.Context, ref migration.UploadRef, err error) error {
		return m.FailUpload(ctx, ref, err)
	}
	// Periodic maintenance: owed settle calls, imports whose task was lost, and
	// transfers whose completion was never confirmed.
	sweep := func(ctx context.Context) error {
		_, serr := m.SettlePending(ctx, 200)
		_, rerr := m.RequeueStale(ctx, 30*time.Minute, 200)
		_, cerr := m.ReconcileStale(ctx, migration.DefaultReconcileAfter, migration.DefaultGiveUpAfter, 200)
		return errors.Join(serr, rerr, cerr)
	}
	_, _, _, _ = handleEvent, handleImport, importGaveUp, sweep
}
