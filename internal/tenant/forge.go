package tenant

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/product"
)

// Forge installations live in forge_installations (schema 0007), keyed by
// installationId. A Connect-on-Forge tenant is a tenants row whose installed
// carried installationId; the two rows are linked through client_key, and the
// events of either report changes of that one tenant (their outbox rows carry
// the clientKey). A pure Forge installation has no tenants row: it is reported
// under its installationId, which is what connectrelay.Tenant.ID returns.

// ForgePreUninstall is the type recorded for a delivery of the preUninstall
// module, whose body carries no eventType of its own.
const ForgePreUninstall = "preUninstall"

// maxSystemToken bounds the app system token stored; Atlassian's are a few KiB.
const maxSystemToken = 16 << 10

// ForgeEvent is one verified Forge delivery to record.
type ForgeEvent struct {
	// Type is forge.EventInstalled, forge.EventUpgraded,
	// forge.EventUninstalled or ForgePreUninstall; "" records the claims and
	// system token only (a migration event), with no lifecycle event.
	Type string
	// DedupeKey identifies the delivery across Forge's retries
	// (forge.LifecycleDedupeKey); required with Type.
	DedupeKey string
	// Claims are the verified token's claims; the installation is theirs.
	Claims *forge.Claims
	// IssuedAt is the token's iat; zero means At.
	IssuedAt time.Time
	// SystemToken is the x-forge-oauth-system header, "" if none. It is
	// stored sealed and never logged.
	SystemToken string
	// At is when the delivery was received.
	At time.Time
}

// ForgeResult is what RecordForge did.
type ForgeResult struct {
	// EventID is the forge_events row of the delivery (of its first copy when
	// Duplicate); 0 when Type was "".
	EventID int64
	// Duplicate reports a copy of a delivery already recorded: nothing was
	// applied again.
	Duplicate bool
	// Created reports that the installation was not known before.
	Created bool
	// Applied is false for a delivery older than the stored claims.
	Applied bool
	// Changes describe what was applied (never a token).
	Changes []string
	// Installation is the installation as stored afterwards.
	Installation connectrelay.ForgeInstallation
}

const forgeColumns = `installation_id, app_id, environment_type, environment_id, cloud_id, product, api_base_url,
	app_version, site_url, COALESCE(client_key, ''), COALESCE(previous_installation_id, ''), installed,
	installed_at, upgraded_at, pre_uninstalled_at, uninstalled_at, license, token_expires_at, claims_iat, license_state`

type forgeRow struct {
	connectrelay.ForgeInstallation
	claimsIAT    time.Time
	licenseState connectrelay.LicenseState
}

// scanForge reads a row of forgeColumns, followed by the columns more points
// at.
func scanForge(row pgx.Row, more ...any) (forgeRow, error) {
	var r forgeRow
	fi := &r.ForgeInstallation
	var license []byte
	dest := []any{&fi.InstallationID, &fi.AppID, &fi.EnvironmentType, &fi.EnvironmentID, &fi.CloudID, &fi.Product,
		&fi.APIBaseURL, &fi.AppVersion, &fi.SiteURL, &fi.ClientKey, &fi.PreviousInstallationID, &fi.Installed,
		&fi.InstalledAt, &fi.UpgradedAt, &fi.PreUninstalledAt, &fi.UninstalledAt, &license, &fi.SystemTokenExpiresAt,
		&r.claimsIAT, &r.licenseState}
	if err := row.Scan(append(dest, more...)...); err != nil {
		return forgeRow{}, err
	}
	if len(license) > 0 {
		fi.License = license
	}
	for _, tp := range []**time.Time{&fi.InstalledAt, &fi.UpgradedAt, &fi.PreUninstalledAt, &fi.UninstalledAt, &fi.SystemTokenExpiresAt} {
		if *tp != nil {
			u := (*tp).UTC()
			*tp = &u
		}
	}
	r.claimsIAT = r.claimsIAT.UTC()
	return r, nil
}

// forgeClaims are the installation's columns taken from a verified token.
type forgeClaims struct {
	appID, envType, envID, cloudID, product, apiBaseURL, appVersion string
	license                                                         json.RawMessage
	licenseState                                                    connectrelay.LicenseState
}

func claimsOf(c *forge.Claims) (forgeClaims, error) {
	fc := forgeClaims{
		appID: c.App.ID, envType: c.App.Environment.Type, envID: c.App.Environment.ID, cloudID: c.CloudID(),
		apiBaseURL: c.App.APIBaseURL, appVersion: c.App.AppVersion, licenseState: connectrelay.LicenseUnknown,
	}
	fc.product = productOf(c)
	if l := c.App.License; l != nil {
		b, err := json.Marshal(l)
		if err != nil {
			return forgeClaims{}, fmt.Errorf("encode license: %w", err)
		}
		fc.license = b
		if active, known := l.State(); known {
			fc.licenseState = connectrelay.LicenseInactive
			if active {
				fc.licenseState = connectrelay.LicenseActive
			}
		}
	}
	return fc, nil
}

// productOf names the installation's product ("jira", "confluence"): from
// the first context's name, which is either the product or a site ARI
// (ari:cloud:<product>::site/<cloudId>), else from an apiBaseUrl of the form
// .../ex/<product>/<cloudId>.
func productOf(c *forge.Claims) string {
	for _, ic := range c.App.Installation.Contexts {
		name := ic.Name
		if rest, ok := strings.CutPrefix(name, "ari:cloud:"); ok {
			name, _, _ = strings.Cut(rest, ":")
		}
		if name != "" && len(name) <= 64 {
			return name
		}
	}
	if _, rest, ok := strings.Cut(c.App.APIBaseURL, "/ex/"); ok {
		if p, _, ok := strings.Cut(rest, "/"); ok && len(p) <= 64 {
			return p
		}
	}
	return ""
}

// SystemTokenExpiry reads the exp claim of an app system token without
// verifying it (the token is opaque to the app; only its holder's API checks
// it). It returns nil when the token is not a JWT with a numeric exp.
func SystemTokenExpiry(token string) *time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > maxSystemToken {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil || *claims.Exp <= 0 || *claims.Exp > math.MaxInt32*4 {
		return nil
	}
	t := time.Unix(int64(*claims.Exp), 0).UTC()
	return &t
}

// forgeTokenAAD binds a sealed system token to its installation, and keeps it
// apart from every shared secret (sealed for a clientKey).
func forgeTokenAAD(installationID string) string { return "forge-system-token:" + installationID }

// RecordForge records a verified Forge delivery in one transaction: it
// creates or updates the installation from the token's claims (a new
// installationId on a known cloudId is linked to the earlier installation as
// a reinstall), links it to the Connect-on-Forge tenant whose installed
// carried the same installationId, stores the system token sealed when it
// expires later than the stored one, applies the event (installed, upgraded,
// pre-uninstall, uninstalled), records the license from app.license, and
// appends the event and any license change to the event feed under the
// linked clientKey, or the installationId for a pure Forge installation.
//
// A delivery whose DedupeKey was recorded before is a Duplicate: only a
// fresher system token is stored. A delivery whose token is older than the
// stored claims is recorded but not applied, so a late retry of an installed
// cannot undo a later pre-uninstall. Errors wrap ErrInvalidPayload or
// ErrUnavailable.
func (s *Store) RecordForge(ctx context.Context, ev ForgeEvent) (ForgeResult, error) {
	c := ev.Claims
	switch {
	case c == nil || !forge.IsInstallationID(c.App.InstallationID):
		return ForgeResult{}, invalid("forge event without a verified installation")
	case ev.Type != "" && ev.DedupeKey == "":
		return ForgeResult{}, invalid("forge %s event without a dedupe key", ev.Type)
	case len(ev.SystemToken) > maxSystemToken:
		return ForgeResult{}, invalid("system token longer than %d bytes", maxSystemToken)
	}
	fc, err := claimsOf(c)
	if err != nil {
		return ForgeResult{}, err
	}
	iat := ev.IssuedAt
	if iat.IsZero() {
		iat = ev.At
	}
	id := c.App.InstallationID
	var sealed *Sealed
	var tokenExp *time.Time
	if ev.SystemToken != "" {
		sl, err := s.box.Seal(forgeTokenAAD(id), []byte(ev.SystemToken))
		if err != nil {
			return ForgeResult{}, err
		}
		sealed, tokenExp = &sl, SystemTokenExpiry(ev.SystemToken)
		// The exp is read unverified: believe at most a day (Atlassian's
		// tokens live two to four hours).
		if limit := ev.At.Add(24 * time.Hour).UTC(); tokenExp != nil && tokenExp.After(limit) {
			tokenExp = &limit
		}
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	if ev.Type == "" {
		// A migration event: most repeat what is stored. Reading instead of
		// writing keeps thousands of events of one transfer from queueing on
		// the installation's row lock.
		fi, ok, err := s.forgeUnchanged(ctx, id, fc, ev)
		if err != nil {
			return ForgeResult{}, storeErr(err, "read forge installation %s", id)
		}
		if ok {
			return ForgeResult{Applied: true, Changes: []string{}, Installation: fi}, nil
		}
	}
	var res ForgeResult
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = ForgeResult{}
		if _, err := tx.Exec(ctx, lockSQL, forgeLinkLockClass, id); err != nil {
			return fmt.Errorf("lock forge installation %s: %w", id, err)
		}
		return s.recordForge(ctx, tx, &res, ev, fc, iat, sealed, tokenExp)
	})
	if err != nil {
		return ForgeResult{}, storeErr(err, "record forge %s of %s", ev.Type, id)
	}
	s.committed.Add(1)
	if ev.Type != "" {
		s.log.InfoContext(ctx, "forge event recorded", slog.String("installation_id", id), slog.String("event", ev.Type),
			slog.Bool("duplicate", res.Duplicate), slog.Bool("created", res.Created), slog.Bool("applied", res.Applied),
			slog.Any("changes", res.Changes), slog.String("client_key", res.Installation.ClientKey))
	}
	return res, nil
}

func (s *Store) recordForge(ctx context.Context, tx pgx.Tx, res *ForgeResult, ev ForgeEvent, fc forgeClaims,
	iat time.Time, sealed *Sealed, tokenExp *time.Time) error {
	id := ev.Claims.App.InstallationID
	// One round trip: create the installation or lock the existing row
	// (the no-op update takes the row lock that orders concurrent copies),
	// and read it with the Connect-on-Forge tenant that carries its id.
	var tenantKey *string
	prev, err := scanForge(tx.QueryRow(ctx, `INSERT INTO forge_installations (installation_id, app_id, environment_type,
		environment_id, cloud_id, product, api_base_url, app_version, license_state, license, claims_iat, first_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (installation_id) DO UPDATE SET updated_at = forge_installations.updated_at
		RETURNING `+forgeColumns+`, xmax = 0,
			(SELECT client_key FROM tenants WHERE installation_id = $1 ORDER BY last_installed_at DESC LIMIT 1)`,
		id, fc.appID, fc.envType, fc.envID, fc.cloudID, fc.product, fc.apiBaseURL, fc.appVersion, fc.licenseState,
		nullJSON(fc.license), iat, ev.At), &res.Created, &tenantKey)
	if err != nil {
		return fmt.Errorf("create or lock forge installation: %w", err)
	}
	if sealed != nil {
		// The token received last wins (it carries the scopes of the latest
		// version), and an expired one is always replaced.
		if _, err := tx.Exec(ctx, `UPDATE forge_installations SET token_key_id = $2, token_nonce = $3,
			token_ciphertext = $4, token_expires_at = $5, token_received_at = $6
			WHERE installation_id = $1 AND (token_ciphertext IS NULL OR token_received_at IS NULL
				OR token_received_at <= $6 OR token_expires_at <= $6)`,
			id, sealed.KeyID, sealed.Nonce, sealed.Ciphertext, tokenExp, ev.At); err != nil {
			return fmt.Errorf("store system token: %w", err)
		}
	}
	if ev.Type != "" {
		err := tx.QueryRow(ctx, `INSERT INTO forge_events (installation_id, type, dedupe_key, at, issued_at, applied)
			VALUES ($1, $2, $3, $4, $5, false) ON CONFLICT (installation_id, dedupe_key) DO NOTHING RETURNING id`,
			id, ev.Type, ev.DedupeKey, ev.At, iat).Scan(&res.EventID)
		if errors.Is(err, pgx.ErrNoRows) {
			res.Duplicate = true
			if err := tx.QueryRow(ctx, `SELECT id, applied, changes FROM forge_events
				WHERE installation_id = $1 AND dedupe_key = $2`, id, ev.DedupeKey).Scan(&res.EventID, &res.Applied, &res.Changes); err != nil {
				return fmt.Errorf("read recorded forge event: %w", err)
			}
			res.Installation, err = s.forgeAfter(ctx, tx, id)
			return err
		}
		if err != nil {
			return fmt.Errorf("record forge event: %w", err)
		}
	}

	var changes []string
	clientKey := prev.ClientKey
	if clientKey == "" && tenantKey != nil {
		clientKey = *tenantKey
		if _, err := tx.Exec(ctx, `UPDATE forge_installations SET client_key = $2 WHERE installation_id = $1`, id, clientKey); err != nil {
			return fmt.Errorf("link connect-on-forge tenant: %w", err)
		}
		changes = append(changes, "linked to Connect tenant "+clientKey)
	}
	if res.Created && fc.cloudID != "" {
		var previous string
		err := tx.QueryRow(ctx, `SELECT installation_id FROM forge_installations
			WHERE cloud_id = $1 AND app_id = $2 AND installation_id <> $3 ORDER BY first_seen_at DESC, installation_id LIMIT 1`,
			fc.cloudID, fc.appID, id).Scan(&previous)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find earlier installation: %w", err)
		default:
			if _, err := tx.Exec(ctx, `UPDATE forge_installations SET previous_installation_id = $2 WHERE installation_id = $1`, id, previous); err != nil {
				return fmt.Errorf("link earlier installation: %w", err)
			}
			changes = append(changes, fmt.Sprintf("reinstall on cloudId %s: previous installation %s (kept, not merged)", fc.cloudID, previous))
		}
	}

	// The token's claims are stored only when it is not older than the
	// stored ones; the event itself is applied whatever its token's age (a
	// retry of an installed delayed behind a later delivery must still count),
	// except that an uninstalled installation stays uninstalled: an
	// installationId is never reused.
	claimsFresh := res.Created || !iat.Before(prev.claimsIAT)
	res.Applied = true
	switch {
	case !claimsFresh:
		changes = append(changes, fmt.Sprintf("claims not updated: token iat %s is older than the stored claims (iat %s)",
			fmtTime(iat), fmtTime(prev.claimsIAT)))
	case !res.Created:
		changes = append(changes, claimChanges(prev, fc)...)
	}
	gone := prev.UninstalledAt != nil
	set := `updated_at = now()`
	args := []any{id, ev.At}
	if claimsFresh {
		set += `, app_id = $3, environment_type = $4, environment_id = $5, cloud_id = $6, product = $7, api_base_url = $8,
		app_version = CASE WHEN $9 = '' THEN app_version ELSE $9 END,
		license_state = CASE WHEN $10 = 'unknown' THEN license_state ELSE $10 END, license = COALESCE($11, license),
		claims_iat = $12`
		args = append(args, fc.appID, fc.envType, fc.envID, fc.cloudID, fc.product, fc.apiBaseURL, fc.appVersion,
			fc.licenseState, nullJSON(fc.license), iat)
	}
	switch ev.Type {
	case forge.EventInstalled, forge.EventUpgraded:
		col := "installed_at"
		if ev.Type == forge.EventUpgraded {
			col = "upgraded_at"
		}
		set += `, ` + col + ` = $2`
		switch {
		case gone:
			res.Applied = false
			changes = append(changes, "not installed again: the installation was uninstalled (an installationId is never reused)")
		case res.Created && ev.Type == forge.EventInstalled:
			set += `, installed = true`
			changes = append([]string{"installed (new installation)"}, changes...)
		case !prev.Installed:
			set += `, installed = true`
			changes = append(changes, "installed")
		}
	case ForgePreUninstall:
		set += `, pre_uninstalled_at = $2`
		changes = append(changes, "uninstall announced (pre-uninstall)")
	case forge.EventUninstalled:
		set += `, installed = false, uninstalled_at = $2`
		if prev.Installed || res.Created {
			changes = append(changes, "uninstalled")
		}
	default:
		set += `, first_seen_at = LEAST(first_seen_at, $2)`
	}
	after, err := scanForge(tx.QueryRow(ctx, `UPDATE forge_installations SET `+set+` WHERE installation_id = $1 RETURNING `+forgeColumns, args...))
	if err != nil {
		return fmt.Errorf("update forge installation: %w", err)
	}
	res.Installation = after.ForgeInstallation
	res.Changes = changes
	subject := clientKey
	if subject == "" {
		subject = id
	}
	if claimsFresh {
		if err := s.forgeLicense(ctx, tx, clientKey, subject, prev, fc, ev); err != nil {
			return err
		}
	}
	if typ, ok := forgeEventTypes[ev.Type]; ok {
		if err := outbox.Append(ctx, tx, subject, typ, "", outbox.Data{Changes: res.Changes}); err != nil {
			return err
		}
	}
	return s.finishForge(ctx, tx, res, ev, id)
}

// tokenRefreshBefore is how long before its expiry a stored system token is
// replaced by the one a migration event brings.
const tokenRefreshBefore = time.Hour

// forgeUnchanged reports whether a delivery without a lifecycle event would
// change nothing: the installation is stored with the same claims, and if the
// delivery brings a system token, the stored one is valid for another
// tokenRefreshBefore.
func (s *Store) forgeUnchanged(ctx context.Context, id string, fc forgeClaims, ev ForgeEvent) (connectrelay.ForgeInstallation, bool, error) {
	r, err := scanForge(s.pool.QueryRow(ctx, `SELECT `+forgeColumns+` FROM forge_installations WHERE installation_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.ForgeInstallation{}, false, nil
	}
	if err != nil {
		return connectrelay.ForgeInstallation{}, false, err
	}
	fi := r.ForgeInstallation
	same := fi.AppID == fc.appID && fi.EnvironmentType == fc.envType && fi.EnvironmentID == fc.envID &&
		fi.CloudID == fc.cloudID && fi.APIBaseURL == fc.apiBaseURL && (fc.appVersion == "" || fi.AppVersion == fc.appVersion) &&
		(fc.licenseState == connectrelay.LicenseUnknown || r.licenseState == fc.licenseState)
	tokenOK := ev.SystemToken == "" || fi.SystemTokenExpiresAt != nil && fi.SystemTokenExpiresAt.After(ev.At.Add(tokenRefreshBefore))
	return fi, same && tokenOK, nil
}

// forgeEventTypes are the feed's types of the recorded deliveries.
var forgeEventTypes = map[string]connectrelay.EventType{
	forge.EventInstalled:   connectrelay.EventForgeInstalled,
	forge.EventUpgraded:    connectrelay.EventForgeUpgraded,
	ForgePreUninstall:      connectrelay.EventForgePreUninstall,
	forge.EventUninstalled: connectrelay.EventForgeUninstalled,
}

// forgeLicense records the license state of the token: on the linked Connect
// tenant (whose state then follows Forge, not the License REST API) and, as a
// tenant.license_changed event, when it changed. An unknown state (no
// app.license) changes nothing.
func (s *Store) forgeLicense(ctx context.Context, tx pgx.Tx, clientKey, subject string, prev forgeRow, fc forgeClaims, ev ForgeEvent) error {
	if fc.licenseState == connectrelay.LicenseUnknown {
		return nil
	}
	before := prev.licenseState
	if clientKey != "" {
		var st connectrelay.LicenseState
		err := tx.QueryRow(ctx, `SELECT license_state FROM tenants WHERE client_key = $1`, clientKey).Scan(&st)
		if err != nil {
			return fmt.Errorf("read tenant license: %w", err)
		}
		before = st
		tag, err := tx.Exec(ctx, `UPDATE tenants SET license_state = $2, license_checked_at = $3, updated_at = now()
			WHERE client_key = $1 AND (license_checked_at IS NULL OR license_checked_at <= $3)`,
			clientKey, fc.licenseState, ev.At)
		if err != nil {
			return fmt.Errorf("record tenant license: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil // a newer check is stored
		}
	}
	if before == fc.licenseState {
		return nil
	}
	changes := []string{fmt.Sprintf("license %s -> %s (Forge app.license)", before, fc.licenseState)}
	if clientKey != "" {
		if _, err := insertEvent(ctx, tx, clientKey, EventLicense, ev.At, time.Time{}, true, changes); err != nil {
			return err
		}
	}
	return outbox.Append(ctx, tx, subject, connectrelay.EventLicenseChanged, "", outbox.Data{Changes: changes})
}

// finishForge stores the outcome on the delivery's row and reads the
// installation back.
func (s *Store) finishForge(ctx context.Context, tx pgx.Tx, res *ForgeResult, ev ForgeEvent, id string) error {
	if res.Changes == nil {
		res.Changes = []string{}
	}
	if res.EventID != 0 {
		if _, err := tx.Exec(ctx, `UPDATE forge_events SET applied = $2, changes = $3 WHERE id = $1`,
			res.EventID, res.Applied, res.Changes); err != nil {
			return fmt.Errorf("record forge event outcome: %w", err)
		}
	}
	if res.Installation.InstallationID != "" {
		return nil // read back by the update that applied the delivery
	}
	var err error
	res.Installation, err = s.forgeAfter(ctx, tx, id)
	return err
}

func (s *Store) forgeAfter(ctx context.Context, tx pgx.Tx, id string) (connectrelay.ForgeInstallation, error) {
	r, err := scanForge(tx.QueryRow(ctx, `SELECT `+forgeColumns+` FROM forge_installations WHERE installation_id = $1`, id))
	if err != nil {
		return connectrelay.ForgeInstallation{}, fmt.Errorf("read forge installation: %w", err)
	}
	return r.ForgeInstallation, nil
}

// claimChanges describes what a newer token changes of the stored claims.
func claimChanges(prev forgeRow, fc forgeClaims) []string {
	var out []string
	for _, f := range []struct{ name, old, new string }{
		{"app version", prev.AppVersion, fc.appVersion},
		{"apiBaseUrl", prev.APIBaseURL, fc.apiBaseURL},
		{"cloudId", prev.CloudID, fc.cloudID},
		{"environment", prev.EnvironmentID, fc.envID},
	} {
		if f.new != "" && f.old != f.new {
			out = append(out, fmt.Sprintf("%s %q -> %q", f.name, f.old, f.new))
		}
	}
	return out
}

func nullJSON(b json.RawMessage) any {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return string(b)
}

// queueLinkForgeTenant queues on b, a batch of the install's transaction, the
// link of the Forge installation installationID, if it is known, to the
// Connect tenant clientKey: a Connect installed that carries installationId
// makes the tenant Connect-on-Forge.
func queueLinkForgeTenant(b *pgx.Batch, clientKey, installationID string) {
	if installationID == "" {
		return
	}
	// Only an installation no Connect tenant holds yet: an installed of
	// another tenant naming the same installationId does not take it over.
	b.Queue(`UPDATE forge_installations SET client_key = $1, updated_at = now()
		WHERE installation_id = $2 AND client_key IS NULL`, clientKey, installationID)
	// A license the Forge installation learnt before the link is the tenant's
	// until the worker checks one.
	b.Queue(`UPDATE tenants t SET license_state = f.license_state, license_checked_at = f.updated_at
		FROM forge_installations f
		WHERE t.client_key = $1 AND f.installation_id = $2 AND f.license_state <> 'unknown' AND t.license_checked_at IS NULL`,
		clientKey, installationID)
}

// ForgeInstallation returns the stored Forge installation. Errors wrap
// ErrNotFound or ErrUnavailable.
func (s *Store) ForgeInstallation(ctx context.Context, installationID string) (connectrelay.ForgeInstallation, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	r, err := scanForge(s.pool.QueryRow(ctx, `SELECT `+forgeColumns+` FROM forge_installations WHERE installation_id = $1`, installationID))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.ForgeInstallation{}, fmt.Errorf("forge installation %s: %w", installationID, ErrNotFound)
	}
	if err != nil {
		return connectrelay.ForgeInstallation{}, storeErr(err, "get forge installation %s", installationID)
	}
	return r.ForgeInstallation, nil
}

// getForge returns the tenant known by an installationId: the linked Connect
// tenant when there is one (a Connect-on-Forge tenant is one tenant), else the
// pure Forge installation as a PlatformForge tenant.
func (s *Store) getForge(ctx context.Context, installationID string) (connectrelay.Tenant, error) {
	fi, err := s.ForgeInstallation(ctx, installationID)
	if errors.Is(err, ErrNotFound) {
		var ck string
		err := s.pool.QueryRow(ctx, `SELECT client_key FROM tenants WHERE installation_id = $1
			ORDER BY last_installed_at DESC LIMIT 1`, installationID).Scan(&ck)
		if errors.Is(err, pgx.ErrNoRows) {
			return connectrelay.Tenant{}, fmt.Errorf("get tenant %s: %w", installationID, ErrNotFound)
		}
		if err != nil {
			return connectrelay.Tenant{}, storeErr(err, "get tenant %s", installationID)
		}
		return s.Get(ctx, ck)
	}
	if err != nil {
		return connectrelay.Tenant{}, err
	}
	if fi.ClientKey != "" {
		return s.Get(ctx, fi.ClientKey)
	}
	return forgeTenant(fi), nil
}

// forgeTenant is the tenant view of a pure Forge installation.
func forgeTenant(fi connectrelay.ForgeInstallation) connectrelay.Tenant {
	t := connectrelay.Tenant{
		HostInfo: connectrelay.HostInfo{
			BaseURL: fi.SiteURL, ProductType: fi.Product, InstallationID: fi.InstallationID, CloudID: fi.CloudID,
		},
		Platform:     connectrelay.PlatformForge,
		Forge:        &fi,
		Installed:    fi.Installed,
		LicenseState: connectrelay.LicenseUnknown,
	}
	if fi.InstalledAt != nil {
		t.FirstInstalledAt, t.LastInstalledAt = *fi.InstalledAt, *fi.InstalledAt
	}
	var l forge.License
	if len(fi.License) > 0 && json.Unmarshal(fi.License, &l) == nil {
		if active, known := l.State(); known {
			t.LicenseState = connectrelay.LicenseInactive
			if active {
				t.LicenseState = connectrelay.LicenseActive
			}
		}
	}
	for _, tp := range []*time.Time{fi.InstalledAt, fi.UpgradedAt, fi.PreUninstalledAt, fi.UninstalledAt} {
		if tp != nil && tp.After(t.LastLifecycleAt) {
			t.LastLifecycleAt = *tp
		}
	}
	return t
}

// attachForge adds the linked Forge installation to a Connect-on-Forge
// tenant, when one was recorded.
func (s *Store) attachForge(ctx context.Context, t *connectrelay.Tenant) error {
	if t.InstallationID == "" {
		return nil
	}
	fi, err := s.ForgeInstallation(ctx, t.InstallationID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	t.Forge = &fi
	return nil
}

// SetForgeSiteURL records the site URL the worker learnt for an
// installation. Errors wrap ErrNotFound or ErrUnavailable.
func (s *Store) SetForgeSiteURL(ctx context.Context, installationID, siteURL string) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `UPDATE forge_installations SET site_url = $2, updated_at = now()
		WHERE installation_id = $1`, installationID, siteURL)
	if err != nil {
		return storeErr(err, "set site url of %s", installationID)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("forge installation %s: %w", installationID, ErrNotFound)
	}
	return nil
}

// ForgeCredentials returns the installation's verified apiBaseUrl and stored
// app system token, for the worker's calls there (product.ForgeAMP checks
// the host and the expiry before sending it). Errors wrap ErrNotFound,
// product.ErrNoSystemToken (none stored, or sealed with a key no longer
// configured) or ErrUnavailable.
func (s *Store) ForgeCredentials(ctx context.Context, installationID string) (product.ForgeCredentials, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var (
		cr     product.ForgeCredentials
		keyID  *string
		exp    *time.Time
		sealed Sealed
	)
	err := s.pool.QueryRow(ctx, `SELECT api_base_url, token_key_id, token_nonce, token_ciphertext, token_expires_at
		FROM forge_installations WHERE installation_id = $1`, installationID).
		Scan(&cr.APIBaseURL, &keyID, &sealed.Nonce, &sealed.Ciphertext, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return product.ForgeCredentials{}, fmt.Errorf("forge installation %s: %w", installationID, ErrNotFound)
	}
	if err != nil {
		return product.ForgeCredentials{}, storeErr(err, "read system token of %s", installationID)
	}
	if keyID == nil {
		return product.ForgeCredentials{}, fmt.Errorf("forge installation %s: %w", installationID, product.ErrNoSystemToken)
	}
	if exp != nil {
		cr.ExpiresAt = exp.UTC()
	}
	sealed.KeyID = *keyID
	tok, err := s.box.Open(forgeTokenAAD(installationID), sealed)
	if err != nil {
		return product.ForgeCredentials{}, fmt.Errorf("forge installation %s: %w: %w", installationID, product.ErrNoSystemToken, err)
	}
	cr.Token = string(tok)
	return cr, nil
}
