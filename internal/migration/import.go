package migration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/jackc/pgx/v5"
)

// errLeaseLost is the cancel cause of an import whose lease another worker took
// over (this one stalled for longer than the lease).
var errLeaseLost = errors.New("import lease lost")

// errImportFinished is the cancel cause set when an import returns normally; it
// only stops the heartbeat.
var errImportFinished = errors.New("import finished")

// bookkeepingTimeout bounds the writes made after an import ended, which use a
// context detached from the caller's: a worker that is shutting down still puts
// the upload back in the queue.
const bookkeepingTimeout = 10 * time.Second

// importClaim is the outcome of the claim transaction of an import.
type importClaim struct {
	done     bool // nothing to import: already imported, or skipped
	transfer connectrelay.Transfer
	label    string
	token    string
	attempt  int
}

// Import imports one upload: it is what the import task runs. It is idempotent and
// safe to run concurrently for the same upload, in one process or several. An
// upload already imported or skipped returns nil at once; an upload of a closed
// transfer is marked skipped without fetching its data; otherwise the import
// takes the upload's lease, streams the data from the product into the Importer
// (hashed and counted on the way, never buffered whole) and records the upload
// imported, with its size and SHA-256, only after the Importer returned nil. A
// cancellation handled here stops the import at once, one handled by another
// process within a heartbeat; a stopped import marks the upload skipped and
// returns nil.
//
// After the import, IN_PROGRESS is reported with a percent that only grows; once
// the final-labelled upload and every other known upload are imported and the
// product's list of the transfer's data names no other, the transfer succeeds
// and SUCCESS is settled. When the list cannot be had, Import returns an error
// (the upload stays imported) and its retry completes the transfer; if the
// retries run out first, ReconcileStale does.
//
// Import returns ErrTransferNotReady for a parked upload, ErrUploadNotFound for an
// unknown one and ErrTenantMismatch when ref.ClientKey is not the transfer's
// tenant (all permanent), ErrImportInProgress when another worker holds the lease
// (retry later), and any other error for a failed attempt (retry: the upload is
// queued again).
func (m *Machine) Import(ctx context.Context, ref UploadRef) error {
	if ref.TransferID == "" || ref.S3Key == "" {
		return fmt.Errorf("migration: import: empty transfer ID or s3Key: %w", ErrUploadNotFound)
	}
	log := m.log.With(slog.String("transfer_id", ref.TransferID), slog.String("s3_key", ref.S3Key))

	// Registered before the claim: a cancellation that commits after the claim
	// (they serialise on the transfer row) finds this import and stops it; one that
	// commits before it makes the claim skip the upload.
	importCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(errImportFinished)
	unregister := m.register(ref.TransferID, cancel)
	defer unregister()

	c, err := m.claimUpload(ctx, ref)
	if err != nil {
		return fmt.Errorf("migration: import upload %q of transfer %s: %w", ref.S3Key, ref.TransferID, err)
	}
	if c.done {
		// The retry of an import that committed: completing the transfer may still
		// be owed (the product could not list its data) and so may a settle call
		// (it failed), and so may the upload's Forge message status; this retry
		// is what makes them.
		return errors.Join(m.acknowledge(ctx, ref.TransferID), m.completeTransfer(ctx, log, ref.TransferID))
	}
	log = log.With(slog.String("client_key", c.transfer.ClientKey), slog.String("label", c.label),
		slog.Int("attempt", c.attempt))
	log.InfoContext(ctx, "import started")
	start := time.Now()

	wg.Go(func() { m.heartbeatLoop(importCtx, log, ref, c.token, cancel) })

	size, sum, ierr := m.stream(importCtx, c, ref.S3Key)
	cancel(errImportFinished)
	wg.Wait()
	if ierr != nil {
		return m.importFailed(ctx, context.Cause(importCtx), log, ref, c, ierr)
	}
	if size == nil {
		log.InfoContext(ctx, "import done without reading the data", slog.Duration("took", time.Since(start)))
		return m.finishImport(ctx, log, ref, c, nil, nil)
	}
	log.InfoContext(ctx, "import streamed", slog.Int64("size_bytes", *size), slog.String("sha256", *sum),
		slog.Duration("took", time.Since(start)))
	return m.finishImport(ctx, log, ref, c, size, sum)
}

// claimUpload decides, under the transfer's and the upload's row locks, whether
// the upload is to be imported, and if so takes its lease.
func (m *Machine) claimUpload(ctx context.Context, ref UploadRef) (importClaim, error) {
	var c importClaim
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		c = importClaim{}
		t, err := scanTransfer(tx.QueryRow(ctx, sqlLockTransfer, ref.TransferID))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUploadNotFound
		}
		if err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		if ref.ClientKey != "" && ref.ClientKey != t.ClientKey {
			return fmt.Errorf("import for %s, transfer belongs to %s: %w", ref.ClientKey, t.ClientKey, ErrTenantMismatch)
		}
		var (
			state     UploadState
			leaseLive bool
		)
		err = tx.QueryRow(ctx, sqlLockUpload, ref.TransferID, ref.S3Key).Scan(&state, &c.label, &leaseLive)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUploadNotFound
		}
		if err != nil {
			return fmt.Errorf("lock upload: %w", err)
		}
		c.transfer = t
		switch {
		case state == UploadImported || state == UploadSkipped || state == UploadFailed:
			c.done = true
			return nil
		case t.Closed():
			c.done = true
			_, err := tx.Exec(ctx, sqlSkipUpload, ref.TransferID, ref.S3Key, closedReason(t))
			if err != nil {
				return fmt.Errorf("skip upload: %w", err)
			}
			return nil
		case state == UploadParked:
			return ErrTransferNotReady
		case state == UploadImporting && leaseLive:
			return ErrImportInProgress
		}
		c.token, err = newLeaseToken()
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, sqlTakeLease, ref.TransferID, ref.S3Key, c.token, m.leaseTTL.Milliseconds()).Scan(&c.attempt)
		if err != nil {
			return fmt.Errorf("take lease: %w", err)
		}
		return nil
	})
	return c, err
}

// stream feeds the upload's data to the Importer, opening it at the Importer's
// first read, then reads what the Importer left so that the size and SHA-256
// describe the whole object. An Importer that never reads the data (it handed
// the upload over) leaves both unknown (nil). An open failure is returned as it
// is, whatever the Importer made of it.
func (m *Machine) stream(ctx context.Context, c importClaim, s3Key string) (size *int64, sum *string, err error) {
	r := &meteredReader{ctx: ctx, h: sha256.New(), open: func() (io.ReadCloser, error) {
		return m.amp.OpenData(ctx, c.transfer.ClientKey, s3Key)
	}}
	defer r.close()
	req := &connectrelay.ImportRequest{Transfer: c.transfer, Label: c.label, S3Key: s3Key, Data: r, Attempt: c.attempt, AMP: m.amp}
	if err := m.importer.Import(ctx, req); err != nil {
		if r.openErr != nil {
			return nil, nil, r.openErr
		}
		return nil, nil, fmt.Errorf("importer of upload %q: %w", s3Key, err)
	}
	if r.body == nil {
		return nil, nil, nil
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, nil, fmt.Errorf("read the rest of upload %q: %w", s3Key, err)
	}
	n, h := r.n, hex.EncodeToString(r.h.Sum(nil))
	return &n, &h, nil
}

// meteredReader opens the data at its first read, hashes and counts what passes
// through it, and stops at once when ctx is done, even for an Importer that does
// not watch ctx.
type meteredReader struct {
	ctx     context.Context
	open    func() (io.ReadCloser, error)
	body    io.ReadCloser
	openErr error
	h       hash.Hash
	n       int64
}

func (mr *meteredReader) Read(p []byte) (int, error) {
	if mr.ctx.Err() != nil {
		return 0, context.Cause(mr.ctx)
	}
	if mr.openErr != nil {
		return 0, mr.openErr
	}
	if mr.body == nil {
		if mr.body, mr.openErr = mr.open(); mr.openErr != nil {
			mr.body = nil
			return 0, mr.openErr
		}
	}
	n, err := mr.body.Read(p)
	mr.h.Write(p[:n])
	mr.n += int64(n)
	return n, err
}

func (mr *meteredReader) close() {
	if mr.body != nil {
		_ = mr.body.Close()
	}
}

// heartbeatLoop renews the import's lease every HeartbeatInterval and stops the
// import when its transfer was closed by another process or its lease was taken
// over.
func (m *Machine) heartbeatLoop(ctx context.Context, log *slog.Logger, ref UploadRef, token string, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(m.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var (
			state   connectrelay.TransferState
			settled bool
		)
		err := m.pool.QueryRow(ctx, sqlHeartbeat, ref.TransferID, ref.S3Key, token, m.leaseTTL.Milliseconds()).Scan(&state, &settled)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, pgx.ErrNoRows):
			log.WarnContext(ctx, "import lease lost to another worker; stopping")
			cancel(errLeaseLost)
			return
		case err != nil:
			// The database may be back before the lease expires; the import goes on.
			log.WarnContext(ctx, "import heartbeat failed", slog.Any("error", err))
		case state.Final():
			cancel(fmt.Errorf("%w: transfer %s", ErrTransferStopped, state))
			return
		case settled:
			cancel(fmt.Errorf("%w: transfer settled", ErrTransferStopped))
			return
		}
	}
}

// importFailed records a failed or stopped import and decides what Import returns.
// cause is the import context's cancel cause (errImportFinished when it was not
// cancelled).
func (m *Machine) importFailed(ctx context.Context, cause error, log *slog.Logger, ref UploadRef, c importClaim, ierr error) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	skip := func(reason string) error {
		if _, err := m.pool.Exec(bctx, sqlSkipLeased, ref.TransferID, ref.S3Key, c.token, reason, redactSecrets(ierr.Error())); err != nil {
			return fmt.Errorf("migration: import upload %q of transfer %s: mark skipped: %w", ref.S3Key, ref.TransferID, err)
		}
		return nil
	}
	switch {
	case errors.Is(cause, ErrTransferStopped) && ctx.Err() == nil:
		log.InfoContext(ctx, "import stopped: transfer closed", slog.Any("cause", cause))
		return skip(cause.Error())
	case errors.Is(cause, errLeaseLost) && ctx.Err() == nil:
		// Another worker owns the upload now; its outcome is the upload's.
		return fmt.Errorf("migration: import upload %q of transfer %s: %w (lease taken over)", ref.S3Key, ref.TransferID, ErrImportInProgress)
	case errors.Is(ierr, connectrelay.ErrImportPending):
		if _, err := m.pool.Exec(bctx, sqlMarkPending, ref.TransferID, ref.S3Key, c.token); err != nil {
			return fmt.Errorf("migration: import upload %q of transfer %s: mark pending: %w", ref.S3Key, ref.TransferID, err)
		}
		log.InfoContext(ctx, "upload handed over; its result is reported later")
		return nil
	case errors.Is(ierr, product.ErrTransferSettled):
		log.InfoContext(ctx, "product says the transfer is settled; upload skipped")
		if err := m.markSettledByProduct(ctx, ref.TransferID); err != nil {
			return err
		}
		return skip("transfer settled")
	}
	log.WarnContext(ctx, "import failed; upload queued again", slog.Any("error", ierr))
	if _, err := m.pool.Exec(bctx, sqlRequeueLeased, ref.TransferID, ref.S3Key, c.token, redactSecrets(ierr.Error())); err != nil {
		ierr = errors.Join(ierr, fmt.Errorf("record failure: %w", err))
	}
	// ierr names the upload (OpenData and the importer step do): only the
	// transfer and the attempt are added here.
	return fmt.Errorf("migration: transfer %s (attempt %d): %w", ref.TransferID, c.attempt, ierr)
}

// finishImport records the upload imported and decides, under the transfer's lock,
// whether the transfer may now be complete; progress, completion (which asks the
// product) and settle calls follow the commit.
func (m *Machine) finishImport(ctx context.Context, log *slog.Logger, ref UploadRef, c importClaim, size *int64, sum *string) error {
	var (
		report    int
		settle    bool
		complete  bool
		imported  int
		remaining int
	)
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		report, settle, complete = 0, false, false
		t, err := scanTransfer(tx.QueryRow(ctx, sqlLockTransfer, ref.TransferID))
		if err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		// Recorded whoever holds the lease now: the Importer did succeed. If another
		// worker finished first, the row is already imported and stays as it is.
		if _, err := tx.Exec(ctx, sqlMarkImported, ref.TransferID, ref.S3Key, size, sum); err != nil {
			return fmt.Errorf("mark imported: %w", err)
		}
		var finalDone bool
		if err := tx.QueryRow(ctx, sqlCountUploads, ref.TransferID, m.finalLabel).Scan(&imported, &remaining, &finalDone); err != nil {
			return fmt.Errorf("count uploads: %w", err)
		}
		switch {
		case t.Closed():
			settle = settlePending(t)
		case finalDone && remaining == 0:
			// Complete as far as this service knows; whether the product holds
			// uploads not announced yet is asked after the commit.
			complete = true
		default:
			p := min(99, max(1, imported*100/(imported+remaining)))
			if p > t.LastPercent {
				if _, err := tx.Exec(ctx, sqlRecordPercent, ref.TransferID, p); err != nil {
					return fmt.Errorf("record percent: %w", err)
				}
				report = p
			}
		}
		return nil
	})
	if err != nil {
		// The Importer succeeded but the record did not: the retry imports again,
		// which the Importer's per-s3Key idempotency makes harmless.
		return fmt.Errorf("migration: import upload %q of transfer %s: record imported: %w", ref.S3Key, ref.TransferID, err)
	}
	log.InfoContext(ctx, "upload imported", slog.Int("imported", imported), slog.Int("remaining", remaining))
	// A Forge upload's SUCCESS is owed now, within the platform's 15 minutes,
	// whatever completion decides.
	ackErr := m.acknowledge(ctx, ref.TransferID)
	if report > 0 {
		m.reportProgress(ctx, log, c.transfer.ClientKey, ref.TransferID, product.Progress{
			Status: product.StatusInProgress, Percent: report,
			Message: fmt.Sprintf("imported %d of %d uploads", imported, imported+remaining),
		})
	}
	switch {
	case complete:
		return errors.Join(ackErr, m.completeTransfer(ctx, log, ref.TransferID))
	case settle:
		return errors.Join(ackErr, m.settle(ctx, ref.TransferID))
	}
	return ackErr
}

// rowQuerier is what completion reads through: the pool, or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// allKnownImported reports whether the transfer is open, its upload labelled
// Options.FinalLabel is imported and no other upload is still to import, and
// returns the transfer's tenant.
func (m *Machine) allKnownImported(ctx context.Context, q rowQuerier, transferID string) (string, bool, error) {
	var (
		clientKey string
		done      bool
	)
	err := q.QueryRow(ctx, sqlAllKnownImported, transferID, m.finalLabel).Scan(&clientKey, &done)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("count uploads: %w", err)
	}
	return clientKey, done, nil
}

// maxLoggedKeys bounds the s3Keys named in one log record or settle message.
const maxLoggedKeys = 10

// completeTransfer makes a transfer whose uploads are all imported (see
// allKnownImported) succeed, once the product confirms it holds no other data for
// it, then makes the settle call the transfer owes, if any.
//
// The product's list (AMP.ListData) is fetched with no lock held. An upload it
// names that is not recorded imported here (its app-data-uploaded event has not
// arrived or not been imported yet) keeps the transfer open: that event will come,
// as AMP re-sends it until it is acknowledged, and the import it schedules
// completes the transfer. A failure to list is returned, so that the task is
// retried; the product's "already settled" and "expired" answers are recorded as
// final. Should neither the event nor a successful list ever come, ReconcileStale
// takes the transfer over once it has been left alone for a while.
func (m *Machine) completeTransfer(ctx context.Context, log *slog.Logger, transferID string) error {
	clientKey, done, err := m.allKnownImported(ctx, m.pool, transferID)
	if err != nil {
		return fmt.Errorf("migration: complete transfer %s: %w", transferID, err)
	}
	if !done {
		return m.settle(ctx, transferID)
	}
	uploads, err := m.amp.ListData(ctx, clientKey, transferID)
	keys := s3Keys(uploads)
	if final, ferr := m.listAnsweredFinal(ctx, log, transferID, err); final {
		return ferr
	}
	if err != nil {
		log.WarnContext(ctx, "could not list the product's uploads before settling SUCCESS", slog.Any("error", err))
		return fmt.Errorf("migration: complete transfer %s: list the product's uploads: %w", transferID, err)
	}
	var (
		succeeded bool
		missing   []string
		nMissing  int
	)
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		succeeded, missing, nMissing = false, nil, 0
		if _, err := tx.Exec(ctx, sqlLockTransferRow, transferID); err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		// Decided again under the lock: another event or import may have changed
		// the transfer while the product was asked.
		if _, done, err := m.allKnownImported(ctx, tx, transferID); err != nil || !done {
			return err
		}
		missing, nMissing, err = notImported(ctx, tx, transferID, keys)
		if err != nil || nMissing > 0 {
			return err
		}
		if err := markSucceeded(ctx, tx, transferID); err != nil {
			return err
		}
		succeeded = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("migration: complete transfer %s: %w", transferID, err)
	}
	switch {
	case nMissing > 0:
		log.InfoContext(ctx, "the product holds uploads not imported yet; the transfer stays open until their events are handled",
			slog.Int("not_imported", nMissing), slog.Any("s3_keys", missing))
	case succeeded:
		log.InfoContext(ctx, "transfer succeeded", slog.Int("listed_uploads", len(keys)))
	}
	return m.settle(ctx, transferID)
}

// s3Keys returns the keys of uploads, the product's list of a transfer's data.
func s3Keys(uploads []product.Upload) []string {
	keys := make([]string, len(uploads))
	for i, u := range uploads {
		keys[i] = u.S3Key
	}
	return keys
}

// notImported returns the s3Keys the product listed for the transfer (keys) that
// are not recorded imported here, at most maxLoggedKeys of them in key order, and
// how many there are. It is the one SUCCESS rule, shared by the import that
// completes a transfer and by ReconcileStale: the transfer succeeds when it is 0.
// An empty key names no upload and is ignored.
func notImported(ctx context.Context, tx pgx.Tx, transferID string, keys []string) ([]string, int, error) {
	if keys == nil {
		keys = []string{}
	}
	var n int
	rows, err := tx.Query(ctx, sqlNotImported, transferID, keys, maxLoggedKeys)
	if err != nil {
		return nil, 0, fmt.Errorf("compare the product's uploads: %w", err)
	}
	missing, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var k string
		return k, r.Scan(&k, &n)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("compare the product's uploads: %w", err)
	}
	return missing, n, nil
}

// markSucceeded makes the locked, complete transfer succeed: a SUCCESS settle
// call is owed.
func markSucceeded(ctx context.Context, tx pgx.Tx, transferID string) error {
	if _, err := tx.Exec(ctx, sqlMarkSucceeded, transferID); err != nil {
		return fmt.Errorf("mark succeeded: %w", err)
	}
	return nil
}

// reportProgress sends an IN_PROGRESS report. product.Progress is advisory: a failure is
// logged, not returned (the upload is imported either way), except the product's
// "already settled" answer, which is recorded as final.
func (m *Machine) reportProgress(ctx context.Context, log *slog.Logger, clientKey, transferID string, p product.Progress) {
	err := m.amp.ReportProgress(ctx, clientKey, transferID, p)
	switch {
	case errors.Is(err, product.ErrTransferSettled):
		log.InfoContext(ctx, "product says the transfer is settled")
		if err := m.markSettledByProduct(ctx, transferID); err != nil {
			log.WarnContext(ctx, "could not record settled transfer", slog.Any("error", err))
		}
	case err != nil:
		log.WarnContext(ctx, "progress report failed", slog.Int("percent", p.Percent), slog.Any("error", err))
	}
}

func newLeaseToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
