package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// migrationEventPayload is the payload of migration:event.
type migrationEventPayload struct {
	// ClientKey is the tenant whose JWT authenticated the event: a Connect
	// clientKey, or the installation ARI of a Forge installation whose
	// invocation token did.
	ClientKey string `json:"clientKey"`
	// Event is the event body as received; migration events carry no secret.
	Event json.RawMessage `json:"event"`
}

// migrationEventPayloadJSON returns json.Marshal of the payload, byte for
// byte. The common case, a client key and a compact body that encoding/json
// would copy unchanged (no whitespace, no '<', '>', '&', U+2028 or U+2029),
// is written directly; anything else goes through json.Marshal.
func migrationEventPayloadJSON(clientKey string, body json.RawMessage) ([]byte, error) {
	if !plainJSONString(clientKey) || !compactJSON(body) {
		return json.Marshal(migrationEventPayload{ClientKey: clientKey, Event: body})
	}
	b := make([]byte, 0, len(`{"clientKey":"","event":}`)+len(clientKey)+len(body))
	b = append(b, `{"clientKey":"`...)
	b = append(b, clientKey...)
	b = append(b, `","event":`...)
	b = append(b, body...)
	return append(b, '}'), nil
}

// plainJSONString reports whether json.Marshal(s) is s in quotes: printable
// ASCII without '"', '\' or the characters it escapes for HTML.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// compactJSON reports whether b is valid JSON that json.Marshal of a
// json.RawMessage copies unchanged: no whitespace byte, no byte it escapes
// for HTML, and no 0xE2 (which starts U+2028 and U+2029).
func compactJSON(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return len(b) > 0 && json.Valid(b)
}

// MigrationEvent enqueues a migration event under the signing tenant and its
// dedupe key (see migration.Event.DedupeKey), so that a re-sent event is a
// duplicate. The tenant is part of the TaskID: another tenant that learns a
// messageId must not be able to pre-empt this tenant's event with its own.
func (e *Enqueuer) MigrationEvent(ctx context.Context, clientKey, dedupeKey string, body json.RawMessage) (duplicate bool, err error) {
	b, err := migrationEventPayloadJSON(clientKey, body)
	if err != nil {
		return false, fmt.Errorf("encode %s payload: %w", TypeMigrationEvent, err)
	}
	t := asynq.NewTask(TypeMigrationEvent, b)
	return e.enqueue(ctx, t, asynq.Queue(QueueMigration), asynq.TaskID("amp:"+clientKey+":"+dedupeKey),
		asynq.Retention(MigrationRetention), asynq.MaxRetry(MaxRetry))
}

// migrationEvent processes one migration event at most once per tenant and
// dedupe key: the claim keeps two workers from running the same event at once,
// and the done marker keeps a re-run after a crash from repeating its side
// effects.
func (h *Handlers) migrationEvent(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t, func(p *migrationEventPayload) bool { return p.ClientKey != "" })
	if err != nil {
		return err
	}
	if h.d.Migration == nil || h.d.Dedupe == nil {
		return notConfigured(t)
	}
	// A Forge installation (its installation ARI as the tenant) sends Forge
	// events, any other tenant Connect webhooks.
	ev, err := migration.ParseEventOf(p.ClientKey, p.Event)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	// Scoped to the tenant, as the enqueue-side TaskID is.
	key := p.ClientKey + ":" + ev.DedupeKey()
	claim, err := h.d.Dedupe.Claim(ctx, key)
	switch {
	case errors.Is(err, dedupe.ErrAlreadyDone):
		h.d.Logger.InfoContext(ctx, "migration event already processed", slog.String("dedupe_key", key))
		return nil
	case errors.Is(err, dedupe.ErrInProgress):
		return &RetryLater{After: 10 * time.Second, Err: err}
	case err != nil:
		return fmt.Errorf("%s: %w", t.Type(), err)
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// The claim is short (a dead worker's event resumes soon) and kept while
	// the event is handled; if it is lost anyway, stop: another worker has it.
	hctx, hcancel := context.WithCancelCause(ctx)
	defer hcancel(nil)
	stop := claim.KeepAlive(hctx, func(err error) { hcancel(err) })
	err = h.d.Migration.HandleEvent(hctx, p.ClientKey, ev)
	stop()
	if err != nil {
		// Let a retry (or another worker) take the event at once rather than
		// wait for the claim to expire.
		_ = claim.Release(bctx)
		return permanent(err)
	}
	if err := claim.Done(bctx); err != nil {
		// The effects are recorded in Postgres and idempotent there; a re-run
		// would find them done. Log rather than fail the task.
		h.d.Logger.WarnContext(ctx, "could not mark migration event done", slog.String("dedupe_key", key), slog.String("error", err.Error()))
	}
	return nil
}
