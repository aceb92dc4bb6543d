package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// FailUpload records that the import of ref will never run again (its task
// failed permanently or used up its retries): the upload is marked failed with
// cause (secrets removed) as its last error, and an open transfer fails with it:
// its remaining uploads are skipped, its imports stop and FAILED is owed, with a
// message naming the upload. Nothing would ever import the upload, so the
// transfer could never succeed; failing at once tells the customer now.
//
// FailUpload is idempotent. It changes nothing (and returns nil) for an upload
// that is imported, skipped, failed or parked, that another worker imports under
// a live lease, or that is unknown. It returns ErrTenantMismatch, changing
// nothing, when ref.ClientKey is not the transfer's tenant. A settle call still
// owed is made (again) in every case; its failure is returned, and SettlePending
// makes the call later.
func (m *Machine) FailUpload(ctx context.Context, ref UploadRef, cause error) error {
	if ref.TransferID == "" || ref.S3Key == "" {
		return nil
	}
	log := m.log.With(slog.String("transfer_id", ref.TransferID), slog.String("s3_key", ref.S3Key))
	why := "the import task gave up"
	if cause != nil {
		why = redactSecrets(cause.Error())
	}
	var (
		failed bool // the upload was marked failed now
		stop   bool // and the transfer failed with it
		state  UploadState
	)
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		failed, stop, state = false, false, ""
		t, err := scanTransfer(tx.QueryRow(ctx, sqlLockTransfer, ref.TransferID))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		if ref.ClientKey != "" && ref.ClientKey != t.ClientKey {
			return fmt.Errorf("failure of an import for %s, transfer belongs to %s: %w", ref.ClientKey, t.ClientKey, ErrTenantMismatch)
		}
		var (
			label     string
			leaseLive bool
		)
		err = tx.QueryRow(ctx, sqlLockUpload, ref.TransferID, ref.S3Key).Scan(&state, &label, &leaseLive)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock upload: %w", err)
		}
		switch {
		case state == UploadImported || state == UploadSkipped || state == UploadFailed || state == UploadParked:
			return nil
		case state == UploadImporting && leaseLive:
			return nil
		}
		if _, err := tx.Exec(ctx, sqlMarkUploadFailedRow, ref.TransferID, ref.S3Key, why); err != nil {
			return fmt.Errorf("mark upload failed: %w", err)
		}
		failed = true
		if t.Closed() {
			return nil
		}
		// The cause stays on the upload (Upload.LastError): the message goes to the
		// product, and the customer, and names the upload only.
		msg := fmt.Sprintf("import of uploaded data %q (label %q) failed permanently", ref.S3Key, label)
		if _, err := tx.Exec(ctx, sqlMarkUploadFailed, ref.TransferID, msg); err != nil {
			return fmt.Errorf("mark transfer failed: %w", err)
		}
		stop = true
		return skipOpenUploads(ctx, tx, ref.TransferID, "transfer failed: upload "+ref.S3Key+" failed")
	})
	if err != nil {
		return fmt.Errorf("migration: fail upload %s of transfer %s: %w", ref.S3Key, ref.TransferID, err)
	}
	switch {
	case stop:
		log.WarnContext(ctx, "upload failed; transfer failed with it", slog.String("error", why))
		m.stopLocal(ref.TransferID, "upload "+ref.S3Key+" failed")
	case failed:
		log.WarnContext(ctx, "upload failed; its transfer was already closed", slog.String("error", why))
	default:
		log.InfoContext(ctx, "upload not failed: nothing to fail", slog.String("upload_state", string(state)))
	}
	return m.settle(ctx, ref.TransferID)
}

// maxRecordedError bounds the error text recorded on an upload or transfer.
const maxRecordedError = 2000

var (
	// The query string of a URL: a presigned URL's signature is a credential.
	urlQuery = regexp.MustCompile(`(?i)\b(https?://[^\s?#"'<>]*)[?#][^\s"'<>]*`)
	// The user information of a URL.
	urlUserinfo = regexp.MustCompile(`(?i)\b(https?://)[^\s/?#@"'<>]*@`)
	// A JWT (the app's Connect JWT, signed with the tenant's shared secret).
	jwtToken = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)
	// An Authorization header's credentials.
	authCredentials = regexp.MustCompile(`(?i)\b(JWT|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}`)
)

// redactSecrets makes an error's text fit to be stored and shown to operators:
// URL query strings and user information, JWTs and Authorization credentials are
// replaced by REDACTED, the text is made valid UTF-8 without NUL (Postgres text
// holds neither) and it is cut to maxRecordedError bytes.
func redactSecrets(s string) string {
	s = urlQuery.ReplaceAllString(s, "${1}?REDACTED")
	s = urlUserinfo.ReplaceAllString(s, "${1}REDACTED@")
	s = jwtToken.ReplaceAllString(s, "REDACTED")
	s = authCredentials.ReplaceAllString(s, "${1} REDACTED")
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	return truncateText(s, maxRecordedError)
}

// truncateText keeps at most the first n bytes of valid UTF-8 text s, cut at a
// rune boundary, and marks a cut with an ellipsis.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
