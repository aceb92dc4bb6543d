package tenant

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/internal/pgpipe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultOpTimeout bounds a Store operation whose context has no deadline, so a
// black-holed Postgres can never block a caller forever. Callers with a deadline of
// their own (the receiver's 1 s budget) are not affected.
const DefaultOpTimeout = 10 * time.Second

// linkLockClass namespaces the transaction advisory locks taken per baseUrl ("clnk");
// the two-key form cannot collide with schema's single-key migration lock.
const linkLockClass int32 = 0x636c6e6b

// forgeLinkLockClass namespaces the transaction advisory locks taken per
// installationId ("flnk") by a Connect install naming one and by RecordForge:
// of the two, the second to take it sees the first's committed row,
// so a Connect-on-Forge link is never missed, and both take it first, so they
// cannot deadlock on the tenant and installation rows.
const forgeLinkLockClass int32 = 0x666c6e6b

// lockSQL takes the transaction advisory lock of class $1 (an int4) and name $2.
const lockSQL = `SELECT pg_advisory_xact_lock($1, hashtext($2))`

// Store keeps tenants in PostgreSQL (tables created by package schema). Every method
// is safe for concurrent use, from any number of processes: writes run in one
// transaction holding the tenant's row lock.
type Store struct {
	pool *pgxpool.Pool
	box  *SecretBox
	log  *slog.Logger
	// committed counts the write transactions committed (pipelined, Forge
	// and worker updates), the progress a waiting callback watches (inPipeTx).
	committed atomic.Int64
}

// NewStore returns a Store over pool, encrypting secrets with box. A nil logger
// discards logs. Log lines carry clientKeys and change notes, never secrets.
func NewStore(pool *pgxpool.Pool, box *SecretBox, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, box: box, log: logger}
}

func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultOpTimeout)
}

// SQL built once from hostFields, so the column list, arguments and scan targets
// cannot disagree. Host fields are named arguments called after their columns.
var (
	hostColumns   = joinFields(true, func(f hostField) string { return f.column })
	tenantColumns = hostColumns + `, extra, installed, enabled, first_installed_at, last_installed_at,
		last_lifecycle_at, data_iat, installed_iat, enabled_iat, license_state, license_checked_at, webhook_endpoints,
		webhook_registered_at, secret_key_id, secret_nonce, secret_ciphertext`

	insertTenantSQL = `INSERT INTO tenants (` + hostColumns + `, extra, installed, enabled,
		first_installed_at, last_installed_at, last_lifecycle_at, data_iat, installed_iat, enabled_iat,
		secret_key_id, secret_nonce, secret_ciphertext, key_env)
		VALUES (` + joinFields(true, func(f hostField) string { return "@" + f.column }) + `, @extra, true, false,
		@at, @at, @at, @iat, @iat, @iat, @secret_key_id, @secret_nonce, @secret_ciphertext, @key_env)
		ON CONFLICT (client_key) DO NOTHING
		RETURNING ` + tenantColumns

	// The clientKey never changes, so it is not in the SET list.
	updateInstallSQL = `UPDATE tenants SET ` + joinFields(false, func(f hostField) string { return f.column + " = @" + f.column }) + `,
		extra = @extra, installed = @installed, installed_iat = @installed_iat,
		last_installed_at = @at, data_iat = @iat, last_lifecycle_at = GREATEST(last_lifecycle_at, @at),
		secret_key_id = @secret_key_id, secret_nonce = @secret_nonce, secret_ciphertext = @secret_ciphertext,
		updated_at = now()
		WHERE client_key = @client_key
		RETURNING ` + tenantColumns

	insertTenantPos  = positional(insertTenantSQL)
	updateInstallPos = positional(updateInstallSQL)

	lockTenantSQL = `SELECT ` + tenantColumns + ` FROM tenants WHERE client_key = $1 FOR NO KEY UPDATE`
	// lockInstallSQL is lockTenantSQL with what an install compares in the same
	// round trip: the key environment and the keys of extra ($2) whose values
	// differ from the stored ones (as jsonb compares them).
	lockInstallSQL = `SELECT ` + tenantColumns + `, key_env,
		(SELECT coalesce(array_agg(key ORDER BY key), '{}')
			FROM jsonb_each(tenants.extra) a FULL JOIN jsonb_each($2::jsonb) b USING (key)
			WHERE a.value IS DISTINCT FROM b.value)
		FROM tenants WHERE client_key = $1 FOR NO KEY UPDATE`
	getTenantSQL = `SELECT ` + tenantColumns + ` FROM tenants WHERE client_key = $1`
)

// joinFields joins part(f) over the host fields, with or without client_key.
func joinFields(withKey bool, part func(hostField) string) string {
	var parts []string
	for _, f := range hostFields {
		if withKey || f.column != "client_key" {
			parts = append(parts, part(f))
		}
	}
	return strings.Join(parts, ", ")
}

// installArgs are the named arguments of insertTenantSQL and updateInstallSQL.
func installArgs(p *InstallPayload, sealed Sealed, at, iat time.Time) pgx.NamedArgs {
	args := pgx.NamedArgs{
		"extra": p.Extra, "at": at, "iat": iat, "key_env": connect.KeyEnvironment(p.BaseURL),
		"secret_key_id": sealed.KeyID, "secret_nonce": sealed.Nonce, "secret_ciphertext": sealed.Ciphertext,
	}
	for _, f := range hostFields {
		args[f.column] = *f.ptr(&p.HostInfo)
	}
	return args
}

// scanTenant reads a row of tenantColumns, followed by the columns more
// points at.
func scanTenant(row pgx.Row, more ...any) (connectrelay.Tenant, Sealed, error) {
	var t connectrelay.Tenant
	var s Sealed
	var extra []byte
	dest := make([]any, 0, len(hostFields)+16)
	for _, f := range hostFields {
		dest = append(dest, f.ptr(&t.HostInfo))
	}
	dest = append(dest, &extra, &t.Installed, &t.Enabled, &t.FirstInstalledAt, &t.LastInstalledAt,
		&t.LastLifecycleAt, &t.DataIssuedAt, &t.InstalledIssuedAt, &t.EnabledIssuedAt, &t.LicenseState, &t.LicenseCheckedAt,
		&t.WebhookEndpoints, &t.WebhookRegisteredAt, &t.SecretKeyID, &s.Nonce, &s.Ciphertext)
	dest = append(dest, more...)
	if err := row.Scan(dest...); err != nil {
		return connectrelay.Tenant{}, Sealed{}, err
	}
	t.Extra = extra
	s.KeyID = t.SecretKeyID
	t.Platform = connectrelay.PlatformConnect
	if t.InstallationID != "" {
		t.Platform = connectrelay.PlatformConnectOnForge
	}
	for _, tp := range []*time.Time{&t.FirstInstalledAt, &t.LastInstalledAt, &t.LastLifecycleAt,
		&t.DataIssuedAt, &t.InstalledIssuedAt, &t.EnabledIssuedAt} {
		*tp = tp.UTC()
	}
	for _, tp := range []**time.Time{&t.LicenseCheckedAt, &t.WebhookRegisteredAt} {
		if *tp != nil {
			u := (*tp).UTC()
			*tp = &u
		}
	}
	return t, s, nil
}

// lockTenant reads a tenant and holds its row lock until the transaction ends. FOR NO
// KEY UPDATE, not FOR UPDATE: it still serialises writers of the tenant, but does not
// block the key-share locks that inserting history or link rows for the same tenant
// takes, so concurrent installs of different clientKeys cannot deadlock on them.
func lockTenant(ctx context.Context, tx pgx.Tx, clientKey string) (connectrelay.Tenant, Sealed, error) {
	t, s, err := scanTenant(tx.QueryRow(ctx, lockTenantSQL, clientKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.Tenant{}, Sealed{}, fmt.Errorf("clientKey %s: %w", clientKey, ErrNotFound)
	}
	return t, s, err
}

func insertEvent(ctx context.Context, tx pgx.Tx, clientKey, typ string, at, iat time.Time, applied bool, changes []string) (int64, error) {
	b := &pgx.Batch{}
	var id int64
	queueEvent(b, clientKey, typ, at, iat, applied, changes, binding{}, &id)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	return id, nil
}

// queueEvent queues the insert of a history row on b; *id receives its id when
// the batch runs.
func queueEvent(b *pgx.Batch, clientKey, typ string, at, iat time.Time, applied bool, changes []string, bound binding, id *int64) {
	if changes == nil {
		changes = []string{}
	}
	var issuedAt *time.Time
	if !iat.IsZero() {
		issuedAt = &iat
	}
	b.Queue(`INSERT INTO tenant_events (client_key, type, at, issued_at, applied, changes, token_sha256, body_sha256)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
		clientKey, typ, at, issuedAt, applied, changes, bound.token, bound.body).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(id); err != nil {
			return fmt.Errorf("record %s event: %w", typ, err)
		}
		return nil
	})
}

// sanitizeExtra makes sure what is stored as extra is a JSON object without the
// secret fields, whoever built the payload.
func sanitizeExtra(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return json.RawMessage(`{}`), nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, invalid("extra is not a JSON object")
	}
	delete(m, fieldSharedSecret)
	delete(m, fieldPublicKey)
	out, err := json.Marshal(m)
	if err != nil {
		return nil, invalid("extra: %v", err)
	}
	return out, nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Install records a verified installed: an idempotent upsert keyed by clientKey, in one
// transaction holding the tenant's row lock, so concurrent duplicates leave one
// consistent tenant whose secret is one of those sent. It saves everything the payload
// carries (the secret sealed with the box's primary key) and appends a history row
// whose changes are computed against the previous record.
//
// d says when it was received and its JWT iat, and binds its token (Delivery): a copy of
// a recorded delivery changes nothing and returns the first's history row (Copy). An installed
// whose iat is older than the last applied one is recorded but not applied: a delayed
// retry must not put back a secret Atlassian has since rotated. An installed for an
// uninstalled tenant installs it again only if its iat is not older than the
// uninstall's. Install never enables a tenant; a new tenant starts disabled.
//
// A baseUrl new to this tenant that other tenants already hold (a site import) is
// recorded as links and in the history of every tenant involved; the other tenants are
// otherwise untouched.
//
// A tenant keeps the install key environment (connect.KeyEnvironment) of its first
// install: an install of an existing tenant whose baseUrl is of another environment is
// refused with ErrKeyEnvironmentMismatch and changes nothing, not even the history.
//
// Errors wrap ErrInvalidPayload for a payload missing clientKey, key, baseUrl or
// sharedSecret, ErrKeyEnvironmentMismatch, ErrTokenReused, and ErrUnavailable when
// Postgres cannot answer.
func (s *Store) Install(ctx context.Context, p InstallPayload, d Delivery) (InstallResult, error) {
	p.EventType = EventInstalled
	if err := p.validate(); err != nil {
		return InstallResult{}, err
	}
	at, iat, tok := d.At, d.iat(), d.binding()
	extra, err := sanitizeExtra(p.Extra)
	if err != nil {
		return InstallResult{}, err
	}
	p.Extra = extra
	sealed, err := s.box.Seal(p.ClientKey, []byte(p.SharedSecret))
	if err != nil {
		return InstallResult{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()

	var res InstallResult
	// Two round trips for an existing tenant (three when its baseUrl is new
	// for it), three for a new one: BEGIN and the locking read of the stored
	// tenant with the history row of the token; for a clientKey not stored
	// yet, its insert, the locking read again and the lookup of the other
	// tenants of its baseUrl; then every write and COMMIT. The insert comes
	// only when the read found nothing: attempted for every install, it cost
	// Postgres more than the read it saved a new tenant.
	err = s.inPipeTx(ctx, func(tx *pgpipe.Tx) error {
		var (
			inserted   connectrelay.Tenant
			stored     storedTenant
			prevSealed Sealed
			found      bool
			seen       recorded
		)
		if p.InstallationID != "" {
			tx.Queue(lockSQL, forgeLinkLockClass, p.InstallationID)
		}
		// queueRead queues the read of the stored tenant under its row lock,
		// and of the history row of the delivery's token.
		queueRead := func() {
			found, seen = false, recorded{}
			tx.Queue(lockInstallSQL, p.ClientKey, p.Extra).QueryRow(func(row pgx.Row) (err error) {
				stored.Tenant, prevSealed, err = scanTenant(row, &stored.keyEnv, &stored.changedExtra)
				switch {
				case errors.Is(err, pgx.ErrNoRows):
					return nil
				case err != nil:
					return fmt.Errorf("lock tenant: %w", err)
				}
				found = true
				return nil
			})
			tok.queueLookup(tx.Batch(), p.ClientKey, &seen)
		}
		queueRead()
		if err := tx.Flush(ctx); err != nil {
			return err
		}
		if err := seen.verdict(); err != nil {
			return err
		}
		if !found {
			tx.Queue(insertTenantPos.sql, insertTenantPos.args(installArgs(&p, sealed, at, iat))...).QueryRow(func(row pgx.Row) error {
				t, _, err := scanTenant(row)
				switch {
				case err == nil:
					inserted, res.Created = t, true
					return nil
				case errors.Is(err, pgx.ErrNoRows):
					// A concurrent first install of the clientKey committed it
					// meanwhile: ON CONFLICT DO NOTHING waited for it.
					return nil
				default:
					return fmt.Errorf("insert tenant: %w", err)
				}
			})
			// The row lock (of the row just inserted, or of the one a
			// concurrent first install committed meanwhile) before the
			// baseUrl's advisory lock, the order every install takes them in.
			queueRead()
			var others []string
			queueLinkLookup(tx, p.ClientKey, p.BaseURL, &others)
			if err := tx.Flush(ctx); err != nil {
				return fmt.Errorf("insert tenant: %w", err)
			}
			if err := seen.verdict(); err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("clientKey %s: %w", p.ClientKey, ErrNotFound)
			}
			if res.Created {
				res.Applied, res.Tenant = true, inserted
				res.Changes = []string{"installed (new tenant)"}
				s.recordLinks(ctx, tx, &res, p.ClientKey, p.BaseURL, "", others, at, iat)
			}
		}
		if seen.found {
			// A copy of a delivery already recorded: nothing changes.
			res = InstallResult{Tenant: stored.Tenant, EventID: seen.eventID, Copy: true}
			return tx.Commit(ctx)
		}
		if !res.Created {
			if err := s.updateExisting(ctx, tx, &res, p, sealed, stored, prevSealed, at, iat); err != nil {
				return err
			}
		}
		queueEvent(tx.Batch(), p.ClientKey, EventInstalled, at, iat, res.Applied, res.Changes, tok, &res.EventID)
		if res.Applied {
			queueLinkForgeTenant(tx.Batch(), p.ClientKey, p.InstallationID)
		}
		if err := queueInstallEvents(tx.Batch(), p.ClientKey, &res); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("record install: %w", err)
		}
		return nil
	})
	if err != nil {
		return InstallResult{}, storeErr(err, "install tenant %s", p.ClientKey)
	}
	if res.Copy {
		s.log.InfoContext(ctx, "installed already recorded: a copy of its delivery",
			slog.String("client_key", p.ClientKey), slog.Int64("event_id", res.EventID))
		return res, nil
	}
	// Debug: the receiver's request line carries the same fields, and the
	// history keeps the change; a line of its own per callback costs a write.
	s.log.DebugContext(ctx, "tenant installed",
		slog.String("client_key", p.ClientKey), slog.Bool("created", res.Created),
		slog.Bool("applied", res.Applied), slog.Any("changes", res.Changes))
	return res, nil
}

// storedTenant is a tenant as an install reads it under its row lock.
type storedTenant struct {
	connectrelay.Tenant
	keyEnv string
	// changedExtra are the keys of extra the install changes.
	changedExtra []string
}

// queueInstallEvents queues the events of an applied install for the event
// feed of tenant ck: installed for a new tenant, updated when something stored
// changed, and site_import_detected when its baseUrl is also another tenant's.
// res.Tenant is not read: for an existing tenant it is filled in only when the
// batch runs.
func queueInstallEvents(b *pgx.Batch, ck string, res *InstallResult) error {
	if !res.Applied {
		return nil
	}
	switch {
	case res.Created:
		if err := outbox.Queue(b, ck, connectrelay.EventInstalled, "", outbox.Data{}); err != nil {
			return err
		}
	case len(res.Changes) > 0:
		if err := outbox.Queue(b, ck, connectrelay.EventUpdated, "", outbox.Data{Changes: res.Changes}); err != nil {
			return err
		}
	}
	if len(res.LinkedClientKeys) == 0 {
		return nil
	}
	return outbox.Queue(b, ck, connectrelay.EventSiteImportDetected, "", outbox.Data{LinkedClientKeys: res.LinkedClientKeys})
}

// updateExisting applies an installed to the existing tenant prev (read under
// its row lock), filling res and queuing the tenant's update on tx.
func (s *Store) updateExisting(ctx context.Context, tx *pgpipe.Tx, res *InstallResult, p InstallPayload, sealed Sealed,
	prev storedTenant, prevSealed Sealed, at, iat time.Time) error {
	if env := connect.KeyEnvironment(p.BaseURL); env != prev.keyEnv {
		s.log.WarnContext(ctx, "install refused: key environment differs from the tenant's",
			slog.String("client_key", p.ClientKey), slog.String("stored_key_env", prev.keyEnv),
			slog.String("install_key_env", env), slog.String("install_base_url", p.BaseURL))
		return fmt.Errorf("%w: tenant %s is of %s, the install's baseUrl %q of %s",
			ErrKeyEnvironmentMismatch, p.ClientKey, prev.keyEnv, p.BaseURL, env)
	}
	scanInto := func(row pgx.Row) (err error) {
		if res.Tenant, _, err = scanTenant(row); err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		return nil
	}
	if iat.Before(prev.DataIssuedAt) {
		res.Changes = []string{fmt.Sprintf("not applied: iat %s is older than the last applied installed (iat %s)",
			fmtTime(iat), fmtTime(prev.DataIssuedAt))}
		tx.Queue(`UPDATE tenants
			SET last_lifecycle_at = GREATEST(last_lifecycle_at, $2), updated_at = now()
			WHERE client_key = $1 RETURNING `+tenantColumns, p.ClientKey, at).QueryRow(scanInto)
		return nil
	}
	res.Applied = true

	installed, installedIAT := prev.Installed, prev.InstalledIssuedAt
	if !prev.Installed {
		if iat.Before(prev.InstalledIssuedAt) {
			res.Changes = append(res.Changes, fmt.Sprintf("stays uninstalled: iat %s is older than the uninstall (iat %s)",
				fmtTime(iat), fmtTime(prev.InstalledIssuedAt)))
		} else {
			installed, installedIAT = true, iat
			res.Changes = append(res.Changes, "reinstalled after uninstall")
		}
	}
	old, err := s.box.Open(p.ClientKey, prevSealed)
	switch {
	case err != nil:
		s.log.WarnContext(ctx, "previous shared secret cannot be decrypted; replacing it",
			slog.String("client_key", p.ClientKey), slog.String("key_id", prevSealed.KeyID))
		res.Changes = append(res.Changes, "secret replaced (the previous one could not be decrypted)")
	case subtle.ConstantTimeCompare(old, []byte(p.SharedSecret)) != 1:
		res.Changes = append(res.Changes, "secret rotated")
	}
	for _, f := range hostFields {
		if a, b := *f.ptr(&prev.HostInfo), *f.ptr(&p.HostInfo); a != b {
			res.Changes = append(res.Changes, fmt.Sprintf("%s %q -> %q", f.json, a, b))
		}
	}
	if len(prev.changedExtra) > 0 {
		res.Changes = append(res.Changes, "extra fields changed: "+strings.Join(prev.changedExtra, ", "))
	}

	args := installArgs(&p, sealed, at, iat)
	args["installed"], args["installed_iat"] = installed, installedIAT
	tx.Queue(updateInstallPos.sql, updateInstallPos.args(args)...).QueryRow(scanInto)
	if prev.BaseURL != p.BaseURL {
		return s.linkBaseURL(ctx, tx, res, p.ClientKey, p.BaseURL, prev.BaseURL, at, iat)
	}
	return nil
}

// linkBaseURL records the other tenants holding baseURL, which is new for tenant
// ck (created, or renamed from prevBaseURL). It runs after the tenant's own row
// is written (queued before it on tx) and under a transaction advisory lock on
// the baseUrl: of two concurrent installs with one baseUrl, the second to take
// the lock sees the first's committed row, so a site import is never missed.
//
// The writes are constant per install, however many tenants share the baseUrl: one
// link from the new clientKey to the baseUrl's representative (its oldest tenant) and
// one linked history row on that representative. Every tenant of a baseUrl is thus
// linked to its representative, which makes the group; res.LinkedClientKeys (and the
// site_import_detected event) still name every other tenant, read in one query.
func (s *Store) linkBaseURL(ctx context.Context, tx *pgpipe.Tx, res *InstallResult, ck, baseURL, prevBaseURL string, at, iat time.Time) error {
	var others []string
	queueLinkLookup(tx, ck, baseURL, &others)
	if err := tx.Flush(ctx); err != nil {
		return fmt.Errorf("find tenants with baseUrl: %w", err)
	}
	s.recordLinks(ctx, tx, res, ck, baseURL, prevBaseURL, others, at, iat)
	return nil
}

// queueLinkLookup queues, after the writes of tenant ck already queued on tx,
// the baseUrl's advisory lock and the read of the other tenants holding
// baseURL into *others, oldest first (the first is the representative).
func queueLinkLookup(tx *pgpipe.Tx, ck, baseURL string, others *[]string) {
	tx.Queue(lockSQL, linkLockClass, baseURL)
	tx.Queue(`SELECT client_key FROM tenants WHERE base_url = $1 AND client_key <> $2
		ORDER BY first_installed_at, client_key`, baseURL, ck).Query(func(rows pgx.Rows) (err error) {
		*others, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
}

// recordLinks queues on tx the link of tenant ck to the representative of the
// others holding baseURL (read by queueLinkLookup) and its history row, and
// notes them in res; nothing when there are none.
func (s *Store) recordLinks(ctx context.Context, tx *pgpipe.Tx, res *InstallResult, ck, baseURL, prevBaseURL string,
	others []string, at, iat time.Time) {
	if len(others) == 0 {
		return
	}
	rep := others[0]
	slices.Sort(others)
	held := fmt.Sprintf("baseUrl %q also held by clientKey(s) %s", baseURL, strings.Join(others, ", "))
	theirs := fmt.Sprintf("baseUrl %q now also held by clientKey %s (renamed from %q)", baseURL, ck, prevBaseURL)
	if res.Created {
		held = "site import: " + held
		theirs = fmt.Sprintf("site import: baseUrl %q now also held by new clientKey %s", baseURL, ck)
	}
	tx.Queue(`INSERT INTO tenant_links (client_key, other_client_key, base_url, detected_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, ck, rep, baseURL, at)
	var repEvent int64
	queueEvent(tx.Batch(), rep, EventLinked, at, iat, true, []string{theirs}, binding{}, &repEvent)
	res.Changes = append(res.Changes, held)
	res.LinkedClientKeys = others
	s.log.WarnContext(ctx, "baseUrl held by several tenants",
		slog.String("client_key", ck), slog.String("base_url", baseURL),
		slog.String("representative", rep), slog.Int("other_tenants", len(others)))
}

// Uninstall records an uninstalled: the tenant becomes not installed and not enabled,
// and keeps its secret and data (an uninstall may be followed by a reinstall, or be
// missed entirely, so nothing is deleted on it). It is not applied, only recorded, if
// its iat is older than the event that last set Installed (a reinstall overtook it);
// see SetEnabled, which also says what d does. Errors wrap ErrNotFound for an unknown
// clientKey, ErrTokenReused, and ErrUnavailable when Postgres cannot answer.
func (s *Store) Uninstall(ctx context.Context, clientKey string, d Delivery) (int64, error) {
	return s.changeState(ctx, clientKey, EventUninstalled, d, func(prev lifecycleState, iat time.Time) (lifecycleState, string) {
		if iat.Before(prev.installedIAT) {
			return prev, notApplied("uninstalled", iat, "installed", prev.installedIAT)
		}
		return lifecycleState{
			installed: false, installedIAT: iat,
			enabled: false, enabledIAT: latest(prev.enabledIAT, iat),
		}, ""
	})
}

// KeyEnvironment returns the install key environment (connect.KeyEnvironment)
// the tenant was first installed from, which never changes. Errors wrap
// ErrNotFound or ErrUnavailable.
func (s *Store) KeyEnvironment(ctx context.Context, clientKey string) (string, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var env string
	err := s.pool.QueryRow(ctx, `SELECT key_env FROM tenants WHERE client_key = $1`, clientKey).Scan(&env)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("key environment of %s: %w", clientKey, ErrNotFound)
	}
	if err != nil {
		return "", storeErr(err, "key environment of %s", clientKey)
	}
	return env, nil
}

// SetEnabled records an enabled or disabled.
//
// Lifecycle events can be processed out of order: disabled and uninstalled arrive
// milliseconds apart in parallel, and any of them may be re-sent late. Every event is
// recorded in the history, but an event changes the tenant only if its JWT iat is not
// older than the iat of the event that last set the same flag: enabled/disabled are
// ordered against the last enabled/disabled/uninstalled (so a late enabled cannot
// re-enable a tenant disabled or uninstalled after it), uninstalled against the last
// install or uninstall (so it is overtaken only by a reinstall, never by a disabled).
// Equal iats (the claim has one-second resolution) apply in processing order. A tenant
// is enabled only while installed (a database constraint): an enabled for a tenant that
// is not installed is recorded but not applied. Together, any order of a disabled and
// an uninstalled ends with installed=false, enabled=false.
//
// d says when it was received and its JWT iat, and binds its token (Delivery): a copy
// of a recorded delivery changes nothing and returns the first's history row id.
// Errors wrap ErrNotFound for an unknown clientKey, ErrTokenReused, and ErrUnavailable
// when Postgres cannot answer.
func (s *Store) SetEnabled(ctx context.Context, clientKey string, enabled bool, d Delivery) (int64, error) {
	typ := EventDisabled
	if enabled {
		typ = EventEnabled
	}
	return s.changeState(ctx, clientKey, typ, d, func(prev lifecycleState, iat time.Time) (lifecycleState, string) {
		if iat.Before(prev.enabledIAT) {
			return prev, notApplied(typ, iat, "enabled", prev.enabledIAT)
		}
		if enabled && !prev.installed {
			return prev, "not applied: tenant is not installed"
		}
		next := prev
		next.enabled, next.enabledIAT = enabled, iat
		return next, ""
	})
}

// lifecycleState is the part of a tenant lifecycle events change.
type lifecycleState struct {
	installed, enabled       bool
	installedIAT, enabledIAT time.Time
}

func notApplied(event string, iat time.Time, flag string, last time.Time) string {
	return fmt.Sprintf("not applied: %s iat %s is older than the last change of %s (iat %s)", event, fmtTime(iat), flag, fmtTime(last))
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// changeState applies one lifecycle event under the tenant's row lock and records it.
// decide returns the next state, or why the event is not applied.
func (s *Store) changeState(ctx context.Context, clientKey, typ string, d Delivery,
	decide func(prev lifecycleState, iat time.Time) (lifecycleState, string),
) (int64, error) {
	at, iat, tok := d.At, d.iat(), d.binding()
	ctx, cancel := bound(ctx)
	defer cancel()
	var (
		id   int64
		seen recorded
	)
	// Two round trips: BEGIN and the locking read, then the writes and COMMIT.
	err := s.inPipeTx(ctx, func(p *pgpipe.Tx) error {
		var prev lifecycleState
		// Only the state this event changes: the whole row (its sealed secret
		// among it) is not needed here.
		p.Queue(`SELECT installed, enabled, installed_iat, enabled_iat FROM tenants
			WHERE client_key = $1 FOR NO KEY UPDATE`, clientKey).QueryRow(func(row pgx.Row) error {
			return row.Scan(&prev.installed, &prev.enabled, &prev.installedIAT, &prev.enabledIAT)
		})
		tok.queueLookup(p.Batch(), clientKey, &seen)
		if err := p.Flush(ctx); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("clientKey %s: %w", clientKey, ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("lock tenant: %w", err)
		}
		if err := seen.verdict(); err != nil {
			return err
		}
		if seen.found {
			// A copy of a delivery already recorded: nothing changes.
			id = seen.eventID
			return p.Commit(ctx)
		}
		next, why := decide(prev, iat)
		var changes []string
		if why != "" {
			changes = []string{why}
		}
		if next.installed != prev.installed {
			changes = append(changes, fmt.Sprintf("installed %t -> %t", prev.installed, next.installed))
		}
		if next.enabled != prev.enabled {
			changes = append(changes, fmt.Sprintf("enabled %t -> %t", prev.enabled, next.enabled))
		}
		p.Queue(`UPDATE tenants SET installed = $2, enabled = $3, installed_iat = $4, enabled_iat = $5,
			last_lifecycle_at = GREATEST(last_lifecycle_at, $6), updated_at = now()
			WHERE client_key = $1`, clientKey, next.installed, next.enabled, next.installedIAT, next.enabledIAT, at)
		queueEvent(p.Batch(), clientKey, typ, at, iat, why == "", changes, tok, &id)
		var ev connectrelay.EventType
		switch {
		case typ == EventUninstalled && prev.installed && !next.installed:
			ev = connectrelay.EventUninstalled
		case typ == EventEnabled && !prev.enabled && next.enabled:
			ev = connectrelay.EventEnabled
		case typ == EventDisabled && prev.enabled && !next.enabled:
			ev = connectrelay.EventDisabled
		}
		if ev != "" {
			if err := outbox.Queue(p.Batch(), clientKey, ev, "", outbox.Data{}); err != nil {
				return err
			}
		}
		if err := p.Commit(ctx); err != nil {
			return fmt.Errorf("record %s: %w", typ, err)
		}
		return nil
	})
	if err != nil {
		return 0, storeErr(err, "%s tenant %s", typ, clientKey)
	}
	if seen.found {
		s.log.InfoContext(ctx, "lifecycle event already recorded: a copy of its delivery",
			slog.String("client_key", clientKey), slog.String("event", typ), slog.Int64("event_id", id))
		return id, nil
	}
	s.log.DebugContext(ctx, "tenant lifecycle event", // as "tenant installed"
		slog.String("client_key", clientKey), slog.String("event", typ), slog.Int64("event_id", id))
	return id, nil
}

// Get returns the tenant known by id: a Connect clientKey, or the
// installationId of a Forge installation (connectrelay.Tenant.ID). A
// Connect-on-Forge tenant is one tenant under either id, with its Forge
// installation attached once one was recorded. Errors wrap ErrNotFound or
// ErrUnavailable.
func (s *Store) Get(ctx context.Context, id string) (connectrelay.Tenant, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if forge.IsInstallationID(id) {
		return s.getForge(ctx, id)
	}
	t, _, err := scanTenant(s.pool.QueryRow(ctx, getTenantSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.Tenant{}, fmt.Errorf("get tenant %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return connectrelay.Tenant{}, storeErr(err, "get tenant %s", id)
	}
	if err := s.attachForge(ctx, &t); err != nil {
		return connectrelay.Tenant{}, err
	}
	return t, nil
}

// SharedSecret returns the decrypted shared secret of clientKey, for verifying and
// signing its JWTs. It is returned whether or not the tenant is installed: deciding
// what an uninstalled tenant may do is the caller's job. Errors wrap ErrNotFound,
// ErrUnavailable or ErrDecrypt.
func (s *Store) SharedSecret(ctx context.Context, clientKey string) ([]byte, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var sealed Sealed
	err := s.pool.QueryRow(ctx, `SELECT secret_key_id, secret_nonce, secret_ciphertext FROM tenants WHERE client_key = $1`,
		clientKey).Scan(&sealed.KeyID, &sealed.Nonce, &sealed.Ciphertext)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("shared secret of %s: %w", clientKey, ErrNotFound)
	}
	if err != nil {
		return nil, storeErr(err, "shared secret of %s", clientKey)
	}
	return s.open(ctx, clientKey, sealed)
}

// open decrypts clientKey's sealed secret, logging (never the secret) when it cannot.
func (s *Store) open(ctx context.Context, clientKey string, sealed Sealed) ([]byte, error) {
	secret, err := s.box.Open(clientKey, sealed)
	if err != nil {
		s.log.ErrorContext(ctx, "stored shared secret cannot be decrypted",
			slog.String("client_key", clientKey), slog.String("key_id", sealed.KeyID))
		return nil, fmt.Errorf("shared secret of %s: %w", clientKey, err)
	}
	return secret, nil
}

// History returns the newest limit events of the tenant known by clientKey (a
// clientKey or a Forge installationId, as Get takes), newest first (limit <= 0
// means 100): its lifecycle history and the Forge deliveries of its
// installation. Errors wrap ErrNotFound or ErrUnavailable.
func (s *Store) History(ctx context.Context, clientKey string, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 100
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	installationID := ""
	if forge.IsInstallationID(clientKey) {
		tn, err := s.getForge(ctx, clientKey)
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", clientKey, err)
		}
		clientKey = tn.ClientKey
		if clientKey == "" {
			installationID = tn.InstallationID
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT id, client_key, type, at, issued_at, applied, changes
		FROM tenant_events WHERE client_key = $1
		UNION ALL
		SELECT e.id, COALESCE(f.client_key, f.installation_id), e.type, e.at, e.issued_at, e.applied, e.changes
		FROM forge_events e JOIN forge_installations f USING (installation_id)
		WHERE (f.client_key = $1 AND $1 <> '') OR f.installation_id = $2
		ORDER BY at DESC, id DESC LIMIT $3`, clientKey, installationID, limit)
	if err != nil {
		return nil, storeErr(err, "history of %s", clientKey)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		var iat *time.Time
		if err := r.Scan(&e.ID, &e.ClientKey, &e.Type, &e.At, &iat, &e.Applied, &e.Changes); err != nil {
			return Event{}, err
		}
		e.At = e.At.UTC()
		if iat != nil {
			e.IssuedAt = iat.UTC()
		}
		return e, nil
	})
	if err != nil {
		return nil, storeErr(err, "history of %s", clientKey)
	}
	if len(events) == 0 && installationID == "" {
		if err := s.mustExist(ctx, clientKey); err != nil {
			return nil, fmt.Errorf("history of %s: %w", clientKey, err)
		}
	}
	return events, nil
}

// Links returns the site-import links clientKey takes part in, either as the newer or
// the older tenant, oldest first. Errors wrap ErrNotFound or ErrUnavailable.
func (s *Store) Links(ctx context.Context, clientKey string) ([]Link, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT client_key, other_client_key, base_url, detected_at
		FROM tenant_links WHERE client_key = $1 OR other_client_key = $1
		ORDER BY detected_at, client_key, other_client_key`, clientKey)
	if err != nil {
		return nil, storeErr(err, "links of %s", clientKey)
	}
	links, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Link, error) {
		var l Link
		err := r.Scan(&l.ClientKey, &l.OtherClientKey, &l.BaseURL, &l.DetectedAt)
		l.DetectedAt = l.DetectedAt.UTC()
		return l, err
	})
	if err != nil {
		return nil, storeErr(err, "links of %s", clientKey)
	}
	if len(links) == 0 {
		if err := s.mustExist(ctx, clientKey); err != nil {
			return nil, fmt.Errorf("links of %s: %w", clientKey, err)
		}
	}
	return links, nil
}

func (s *Store) mustExist(ctx context.Context, clientKey string) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE client_key = $1)`, clientKey).Scan(&exists); err != nil {
		return storeErr(err, "look up tenant")
	}
	if !exists {
		return ErrNotFound
	}
	return nil
}

func (s *Store) queryTenants(ctx context.Context, sql string, args ...any) ([]connectrelay.Tenant, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (connectrelay.Tenant, error) {
		t, _, err := scanTenant(r)
		return t, err
	})
}

// ByBaseURL returns every tenant whose baseUrl is exactly baseURL, oldest first. More
// than one means a site import. Errors wrap ErrUnavailable.
func (s *Store) ByBaseURL(ctx context.Context, baseURL string) ([]connectrelay.Tenant, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	ts, err := s.queryTenants(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE base_url = $1
		ORDER BY first_installed_at, client_key`, baseURL)
	if err != nil {
		return nil, storeErr(err, "tenants with baseUrl %s", baseURL)
	}
	return ts, nil
}

// List returns tenants ordered by clientKey, for operators (limit <= 0 means 100, at
// most 1000). Errors wrap ErrUnavailable.
func (s *Store) List(ctx context.Context, limit, offset int) ([]connectrelay.Tenant, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	offset = max(offset, 0)
	ctx, cancel := bound(ctx)
	defer cancel()
	ts, err := s.queryTenants(ctx, `SELECT `+tenantColumns+` FROM tenants ORDER BY client_key LIMIT $1 OFFSET $2`, limit, offset)
	if err != nil {
		return nil, storeErr(err, "list tenants")
	}
	return ts, nil
}

// SetLicense records the license state the worker read from the License REST API at
// checkedAt. A result older than the one stored is ignored, so a slow retry cannot
// overwrite a newer check. A change of state is recorded in the history. state must
// be one of the License* constants. Errors wrap ErrNotFound or ErrUnavailable.
func (s *Store) SetLicense(ctx context.Context, clientKey string, state connectrelay.LicenseState, checkedAt time.Time) error {
	if !slices.Contains([]connectrelay.LicenseState{connectrelay.LicenseUnknown, connectrelay.LicenseActive, connectrelay.LicenseInactive}, state) {
		return fmt.Errorf("set license of %s: unknown license state %q", clientKey, state)
	}
	return s.workerUpdate(ctx, clientKey, "set license", func(ctx context.Context, tx pgx.Tx, prev connectrelay.Tenant) error {
		if prev.LicenseCheckedAt != nil && checkedAt.Before(*prev.LicenseCheckedAt) {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE tenants SET license_state = $2, license_checked_at = $3, updated_at = now()
			WHERE client_key = $1`, clientKey, state, checkedAt); err != nil {
			return err
		}
		if prev.LicenseState == state {
			return nil
		}
		changes := []string{fmt.Sprintf("license %s -> %s", prev.LicenseState, state)}
		if _, err := insertEvent(ctx, tx, clientKey, EventLicense, checkedAt, time.Time{}, true, changes); err != nil {
			return err
		}
		return outbox.Append(ctx, tx, clientKey, connectrelay.EventLicenseChanged, "", outbox.Data{Changes: changes})
	})
}

// SetWebhookRegistered records that the worker registered the migration webhook
// endpoints at at. An older registration than the one stored is ignored; a change of
// endpoints is recorded in the history. Errors wrap ErrNotFound or ErrUnavailable.
func (s *Store) SetWebhookRegistered(ctx context.Context, clientKey string, endpoints []string, at time.Time) error {
	if endpoints == nil {
		endpoints = []string{}
	}
	return s.workerUpdate(ctx, clientKey, "set webhook registration", func(ctx context.Context, tx pgx.Tx, prev connectrelay.Tenant) error {
		if prev.WebhookRegisteredAt != nil && at.Before(*prev.WebhookRegisteredAt) {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE tenants SET webhook_endpoints = $2, webhook_registered_at = $3, updated_at = now()
			WHERE client_key = $1`, clientKey, endpoints, at); err != nil {
			return err
		}
		if slices.Equal(prev.WebhookEndpoints, endpoints) {
			return nil
		}
		_, err := insertEvent(ctx, tx, clientKey, EventWebhook, at, time.Time{}, true,
			[]string{fmt.Sprintf("migration webhook endpoints %q -> %q", prev.WebhookEndpoints, endpoints)})
		return err
	})
}

// workerUpdate runs fn in a transaction holding clientKey's row lock, passing it the
// bounded context.
func (s *Store) workerUpdate(ctx context.Context, clientKey, what string, fn func(context.Context, pgx.Tx, connectrelay.Tenant) error) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		prev, _, err := lockTenant(ctx, tx, clientKey)
		if err != nil {
			return err
		}
		return fn(ctx, tx, prev)
	})
	if err != nil {
		return storeErr(err, "%s of %s", what, clientKey)
	}
	s.committed.Add(1)
	return nil
}

// Query selects a page of tenants for List-like reads (the internal API, the
// operator commands).
type Query struct {
	// Installed, when not nil, keeps only tenants whose Installed equals it.
	Installed *bool
	// License, when not empty, keeps only tenants in that license state.
	License connectrelay.LicenseState
	// After starts the page after this clientKey (the cursor of the previous
	// page); "" starts at the first.
	After string
	// Limit bounds the page: default 100, at most 1000.
	Limit int
	// IncludeForge adds the Forge installations that have no Connect tenant
	// (PlatformForge, known by their installationId) to the page, in the
	// same order by ID. Work that needs a Connect secret leaves it false.
	IncludeForge bool
}

// Page returns the tenants selected by q in clientKey order, and the cursor of
// the next page ("" when this is the last). Errors wrap ErrUnavailable.
func (s *Store) Page(ctx context.Context, q Query) ([]connectrelay.Tenant, string, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 1000)
	ctx, cancel := bound(ctx)
	defer cancel()
	ts, err := s.queryTenants(ctx, `SELECT `+tenantColumns+` FROM tenants
		WHERE client_key > $1 AND ($2::boolean IS NULL OR installed = $2) AND ($3 = '' OR license_state = $3)
		ORDER BY client_key LIMIT $4`, q.After, q.Installed, string(q.License), q.Limit+1)
	if err != nil {
		return nil, "", storeErr(err, "page of tenants")
	}
	if q.IncludeForge {
		fs, err := s.forgePage(ctx, q)
		if err != nil {
			return nil, "", storeErr(err, "page of forge installations")
		}
		ts = append(ts, fs...)
		slices.SortFunc(ts, func(a, b connectrelay.Tenant) int { return strings.Compare(a.ID(), b.ID()) })
	}
	next := ""
	if len(ts) > q.Limit {
		ts = ts[:q.Limit]
		next = ts[len(ts)-1].ID()
	}
	return ts, next, nil
}

// forgePage is Page's selection among the pure Forge installations.
func (s *Store) forgePage(ctx context.Context, q Query) ([]connectrelay.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+forgeColumns+` FROM forge_installations
		WHERE client_key IS NULL AND installation_id > $1 AND ($2::boolean IS NULL OR installed = $2)
			AND ($3 = '' OR license_state = $3)
		ORDER BY installation_id LIMIT $4`, q.After, q.Installed, string(q.License), q.Limit+1)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (connectrelay.Tenant, error) {
		fr, err := scanForge(r)
		return forgeTenant(fr.ForgeInstallation), err
	})
}
