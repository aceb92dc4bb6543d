package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/ops"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

const opsUsage = `operator commands (read DATABASE_URL, REDIS_URL, CONNECT_SECRET_KEY[_PREVIOUS]
as the service does; --json on each prints JSON):
  connectctl tenants list [--state installed|uninstalled|all] [--license active|inactive|unknown]
  connectctl tenants show CLIENTKEY [--events N]
      state, license, versions, baseUrl history, last events, site-import links, transfers
  connectctl transfers list [--open] [--limit N]
  connectctl transfers show TRANSFERID
      events received, uploads and their states, progress sent, settlement, errors
  connectctl stale --since TIME
      installed tenants that sent no installed since TIME (a descriptor change
      published then), once TIME is more than 24 h ago; flags, never deletes
  connectctl reencrypt [--batch N]
      re-encrypts every secret under CONNECT_SECRET_KEY; idempotent, safe live
  connectctl tasks requeue (--tenant CLIENTKEY | --transfer TRANSFERID | --type TYPE)
      runs archived tasks again
`

// Timeouts of the operator commands (the database and Redis must answer within
// ops.ConnectTimeout in any case).
const (
	readTimeout      = 30 * time.Second
	reencryptTimeout = 30 * time.Minute
	requeueTimeout   = 5 * time.Minute
)

// isOpsCommand reports whether name is an operator command.
func isOpsCommand(name string) bool {
	switch name {
	case "tenants", "transfers", "stale", "reencrypt", "tasks":
		return true
	}
	return false
}

// opsRun is one operator command run: its name, output and environment.
type opsRun struct {
	name           string
	env            Env
	stdout, stderr io.Writer
	now            func() time.Time
	json           bool
}

// usageErr prints a one-line error naming the argument and returns ExitUsage.
func (r *opsRun) usageErr(format string, args ...any) int {
	fmt.Fprintf(r.stderr, "connectctl %s: %s\n", r.name, oneLine(fmt.Sprintf(format, args...)))
	return ExitUsage
}

// fail prints a one-line error and returns the exit code it deserves.
func (r *opsRun) fail(err error) int {
	msg := strings.TrimPrefix(err.Error(), ops.ErrInvalidArgument.Error()+": ")
	fmt.Fprintf(r.stderr, "connectctl %s: %s\n", r.name, oneLine(msg))
	if errors.Is(err, ops.ErrInvalidArgument) || errors.Is(err, config.ErrInvalid) || errors.Is(err, ops.ErrNoKey) {
		return ExitUsage
	}
	return ExitFailed
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// flags builds the command's flag set with --json.
func (r *opsRun) flags() *flag.FlagSet {
	fs := flag.NewFlagSet(r.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&r.json, "json", false, "print JSON")
	return fs
}

// parse parses args; on error it returns the exit code to return.
func (r *opsRun) parse(fs *flag.FlagSet, args []string, positional int, what string) ([]string, int, bool) {
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(r.stdout, opsUsage)
		return nil, ExitOK, false
	}
	if err != nil {
		return nil, r.usageErr("%v", err), false
	}
	if len(pos) != positional {
		if positional == 0 {
			return nil, r.usageErr("unexpected argument %q", pos[0]), false
		}
		return nil, r.usageErr("want one %s, got %d arguments", what, len(pos)), false
	}
	return pos, 0, true
}

func (r *opsRun) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// open loads the configuration and connects to the database; withKey builds
// the secret box from CONNECT_SECRET_KEY[_PREVIOUS].
func (r *opsRun) open(ctx context.Context, withKey bool) (*ops.DB, error) {
	cfg, err := config.LoadOps(r.env)
	if err != nil {
		return nil, err
	}
	var box *tenant.SecretBox
	if withKey {
		if cfg.SecretKey == nil {
			return nil, ops.ErrNoKey
		}
		if box, err = tenant.NewSecretBox(cfg.SecretKey, cfg.PreviousSecretKeys...); err != nil {
			return nil, fmt.Errorf("%w: CONNECT_SECRET_KEY: %w", config.ErrInvalid, err)
		}
	}
	return ops.Open(ctx, cfg.DatabaseURL, box, r.logger(), r.now)
}

// print writes v as indented JSON, or text with the writer.
func (r *opsRun) print(v any, text func(w io.Writer)) {
	if r.json {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			fmt.Fprintf(r.stderr, "connectctl %s: encode JSON: %v\n", r.name, err)
			return
		}
		fmt.Fprintf(r.stdout, "%s\n", b)
		return
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	text(tw)
	_ = tw.Flush()
}

// runOps runs an operator command.
func runOps(args []string, env Env, stdout, stderr io.Writer, now func() time.Time) int {
	r := &opsRun{name: args[0], env: env, stdout: stdout, stderr: stderr, now: now}
	switch args[0] {
	case "tenants", "transfers", "tasks":
		sub := ""
		if len(args) > 1 {
			sub = args[1]
		}
		r.name = args[0] + " " + sub
		switch {
		case sub == "-h" || sub == "--help" || sub == "help":
			fmt.Fprint(stdout, opsUsage)
			return ExitOK
		case args[0] == "tenants" && sub == "list":
			return r.tenantsList(args[2:])
		case args[0] == "tenants" && sub == "show":
			return r.tenantsShow(args[2:])
		case args[0] == "transfers" && sub == "list":
			return r.transfersList(args[2:])
		case args[0] == "transfers" && sub == "show":
			return r.transfersShow(args[2:])
		case args[0] == "tasks" && sub == "requeue":
			return r.tasksRequeue(args[2:])
		}
		r.name = args[0]
		subs := map[string]string{"tenants": "list or show", "transfers": "list or show", "tasks": "requeue"}[args[0]]
		return r.usageErr("unknown subcommand %q: want %s", sub, subs)
	case "stale":
		return r.stale(args[1:])
	default: // "reencrypt"
		return r.reencrypt(args[1:])
	}
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tsPtr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return ts(*t)
}

func (r *opsRun) tenantsList(args []string) int {
	fs := r.flags()
	var f ops.TenantFilter
	fs.StringVar(&f.State, "state", ops.StateAll, "installed, uninstalled or all")
	fs.StringVar(&f.License, "license", "", "active, inactive or unknown")
	if _, code, ok := r.parse(fs, args, 0, ""); !ok {
		return code
	}
	if err := f.Validate(); err != nil {
		return r.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	db, err := r.open(ctx, false)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	list, err := db.ListTenants(ctx, f)
	if err != nil {
		return r.fail(err)
	}
	r.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tPLATFORM\tSTATE\tENABLED\tLICENSE\tPRODUCT\tBASEURL\tLAST INSTALLED")
		for _, t := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\n", t.ID, t.Platform, t.State, t.Enabled, t.License, t.ProductType, t.BaseURL, ts(t.LastInstalledAt))
		}
		fmt.Fprintf(w, "%d tenant(s)\n", len(list))
	})
	return ExitOK
}

func (r *opsRun) tenantsShow(args []string) int {
	fs := r.flags()
	events := fs.Int("events", 20, "how many of the newest history events to show")
	pos, code, ok := r.parse(fs, args, 1, "CLIENTKEY")
	if !ok {
		return code
	}
	if *events < 1 || *events > 1000 {
		return r.usageErr("--events must be between 1 and 1000, got %d", *events)
	}
	if strings.TrimSpace(pos[0]) == "" {
		return r.usageErr("CLIENTKEY must not be empty")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	db, err := r.open(ctx, false)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	rep, err := db.ShowTenant(ctx, pos[0], *events)
	if err != nil {
		return r.fail(err)
	}
	r.print(rep, func(w io.Writer) {
		t := rep.Tenant
		enabled := "disabled"
		if t.Enabled {
			enabled = "enabled"
		}
		fmt.Fprintf(w, "tenant %s (%s)\n", t.ID, t.Platform)
		fmt.Fprintf(w, "  state:\t%s (%s)\n", t.State, enabled)
		fmt.Fprintf(w, "  license:\t%s (checked %s)\n", t.License, tsPtr(t.LicenseCheckedAt))
		fmt.Fprintf(w, "  baseUrl:\t%s\n", t.BaseURL)
		if t.DisplayURL != "" {
			fmt.Fprintf(w, "  displayUrl:\t%s\n", t.DisplayURL)
		}
		fmt.Fprintf(w, "  product:\t%s\n", t.ProductType)
		fmt.Fprintf(w, "  versions:\tserver %s, plugins %s\n", orDash(t.ServerVersion), orDash(t.PluginsVersion))
		if t.EntitlementNumber != "" || t.ServiceEntitlementNumber != "" {
			fmt.Fprintf(w, "  entitlement:\t%s (SEN %s)\n", orDash(t.EntitlementNumber), orDash(t.ServiceEntitlementNumber))
		}
		fmt.Fprintf(w, "  installed:\tfirst %s, last %s\n", ts(t.FirstInstalledAt), ts(t.LastInstalledAt))
		fmt.Fprintf(w, "  last lifecycle event:\t%s\n", ts(t.LastLifecycleAt))
		fmt.Fprintf(w, "  migration webhook:\t%s (registered %s)\n", orDash(strings.Join(t.WebhookEndpoints, ", ")), tsPtr(t.WebhookRegisteredAt))
		fmt.Fprintf(w, "  secret sealed with key:\t%s\n", t.SecretKeyID)
		fmt.Fprintln(w, "baseUrl history:")
		if len(rep.BaseURLHistory) == 0 {
			fmt.Fprintln(w, "  (never changed)")
		}
		for _, c := range rep.BaseURLHistory {
			fmt.Fprintf(w, "  %s\t%s -> %s\n", ts(c.At), c.From, c.To)
		}
		fmt.Fprintln(w, "site-import links:")
		if len(rep.SiteImportLinks) == 0 {
			fmt.Fprintln(w, "  (none)")
		}
		for _, l := range rep.SiteImportLinks {
			fmt.Fprintf(w, "  %s\t%s installed with baseUrl %s, already held by %s\n", ts(l.DetectedAt), l.ClientKey, l.BaseURL, l.OtherClientKey)
		}
		fmt.Fprintf(w, "last %d event(s), newest first:\n", len(rep.Events))
		for _, e := range rep.Events {
			applied := "applied"
			if !e.Applied {
				applied = "NOT applied"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", ts(e.At), e.Type, applied, strings.Join(e.Changes, "; "))
		}
		fmt.Fprintln(w, "transfers:")
		if len(rep.Transfers) == 0 {
			fmt.Fprintln(w, "  (none)")
		}
		for _, tr := range rep.Transfers {
			fmt.Fprintf(w, "  %s\t%s\t%d%%\tsettlement %s\t%s\n", tr.TransferID, tr.State, tr.LastPercent, tr.Settlement, ts(tr.CreatedAt))
		}
	})
	return ExitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *opsRun) transfersList(args []string) int {
	fs := r.flags()
	open := fs.Bool("open", false, "only transfers not settled at the product yet")
	limit := fs.Int("limit", 50, "how many of the newest transfers")
	if _, code, ok := r.parse(fs, args, 0, ""); !ok {
		return code
	}
	if *limit < 1 || *limit > 1000 {
		return r.usageErr("--limit must be between 1 and 1000, got %d", *limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	db, err := r.open(ctx, false)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	list, err := db.ListTransfers(ctx, *open, *limit)
	if err != nil {
		return r.fail(err)
	}
	r.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "TRANSFERID\tCLIENTKEY\tSTATE\tPROGRESS\tSETTLEMENT\tCREATED\tUPDATED")
		for _, t := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d%%\t%s\t%s\t%s\n", t.TransferID, t.ClientKey, t.State, t.LastPercent, t.Settlement, ts(t.CreatedAt), ts(t.UpdatedAt))
		}
		fmt.Fprintf(w, "%d transfer(s)\n", len(list))
	})
	return ExitOK
}

func (r *opsRun) transfersShow(args []string) int {
	fs := r.flags()
	pos, code, ok := r.parse(fs, args, 1, "TRANSFERID")
	if !ok {
		return code
	}
	if strings.TrimSpace(pos[0]) == "" {
		return r.usageErr("TRANSFERID must not be empty")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	db, err := r.open(ctx, false)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	rep, err := db.ShowTransfer(ctx, pos[0])
	if err != nil {
		return r.fail(err)
	}
	r.print(rep, func(w io.Writer) {
		t := rep.Transfer
		fmt.Fprintf(w, "transfer %s\n", t.TransferID)
		fmt.Fprintf(w, "  tenant:\t%s\n", t.ClientKey)
		if t.MigrationID != "" {
			fmt.Fprintf(w, "  migration:\t%s\n", t.MigrationID)
		}
		fmt.Fprintf(w, "  state:\t%s (created %s, ready %s, finished %s)\n", t.State, ts(t.CreatedAt), ts(rep.ReadyAt), ts(rep.FinishedAt))
		fmt.Fprintf(w, "  progress sent:\t%d%%\n", rep.ProgressSent)
		s := rep.Settlement
		fmt.Fprintf(w, "  settlement:\t%s", s.Summary)
		if s.Status != "" {
			fmt.Fprintf(w, ", status %s", s.Status)
		}
		if s.Result != "" {
			fmt.Fprintf(w, ", %s at %s", s.Result, ts(s.SettledAt))
		}
		if s.Message != "" {
			fmt.Fprintf(w, ", message %q", s.Message)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "events received (%d):\n", len(rep.Events))
		for _, e := range rep.Events {
			extra := ""
			if e.S3Key != "" {
				extra = " s3Key " + e.S3Key
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\tx%d%s\n", ts(e.ReceivedAt), e.EventType, e.Outcome, e.Deliveries, extra)
		}
		fmt.Fprintf(w, "uploads (%d):\n", len(rep.Uploads))
		for _, u := range rep.Uploads {
			detail := fmt.Sprintf("attempts %d", u.Attempts)
			if u.SizeBytes > 0 {
				detail += fmt.Sprintf(", %d bytes", u.SizeBytes)
			}
			if u.SkipReason != "" {
				detail += ", " + u.SkipReason
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", u.S3Key, orDash(u.Label), u.State, detail)
		}
		fmt.Fprintf(w, "errors (%d):\n", len(rep.Errors))
		for _, e := range rep.Errors {
			fmt.Fprintf(w, "  %s\n", e)
		}
	})
	return ExitOK
}

func (r *opsRun) stale(args []string) int {
	fs := r.flags()
	sinceRaw := fs.String("since", "", "when the descriptor change was published (RFC 3339 or a date)")
	limit := fs.Int("limit", 1000, "how many tenants to list (the count is always complete)")
	if _, code, ok := r.parse(fs, args, 0, ""); !ok {
		return code
	}
	if *sinceRaw == "" {
		return r.usageErr("--since is required: when the descriptor change was published, e.g. --since 2026-03-04T05:06:07Z")
	}
	since, err := config.ParseTime(*sinceRaw)
	if err != nil {
		return r.usageErr("--since: %v", err)
	}
	if *limit < 1 || *limit > 1000 {
		return r.usageErr("--limit must be between 1 and 1000, got %d", *limit)
	}
	if err := ops.CheckStaleSince(since, r.now()); err != nil {
		return r.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	db, err := r.open(ctx, false)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	rep, err := db.Stale(ctx, since, *limit)
	if err != nil {
		return r.fail(err)
	}
	r.print(rep, func(w io.Writer) {
		fmt.Fprintf(w, "%d installed tenant(s) sent no installed since %s: probably uninstalled without the hook reaching us (flagged only; nothing changed)\n",
			rep.Count, ts(rep.Since))
		if len(rep.Tenants) == 0 {
			return
		}
		fmt.Fprintln(w, "CLIENTKEY\tBASEURL\tLICENSE\tLAST INSTALLED\tLAST LIFECYCLE EVENT")
		for _, t := range rep.Tenants {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ClientKey, t.BaseURL, t.License, ts(t.LastInstalledAt), ts(t.LastLifecycleAt))
		}
	})
	return ExitOK
}

func (r *opsRun) reencrypt(args []string) int {
	fs := r.flags()
	batch := fs.Int("batch", 100, "rows read at a time")
	if _, code, ok := r.parse(fs, args, 0, ""); !ok {
		return code
	}
	if *batch < 1 || *batch > 10000 {
		return r.usageErr("--batch must be between 1 and 10000, got %d", *batch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), reencryptTimeout)
	defer cancel()
	db, err := r.open(ctx, true)
	if err != nil {
		return r.fail(err)
	}
	defer db.Close()
	rep, rerr := db.Reencrypt(ctx, *batch)
	if rerr != nil && !errors.Is(rerr, tenant.ErrDecrypt) {
		return r.fail(rerr)
	}
	r.print(rep, func(w io.Writer) {
		fmt.Fprintf(w, "re-encrypted %d secret(s); %d of %d tenant(s) sealed with key %s", rep.Reencrypted, rep.Current, rep.Total, rep.PrimaryKeyID)
		if rep.Raced > 0 {
			fmt.Fprintf(w, "; %d rewritten concurrently and read again", rep.Raced)
		}
		fmt.Fprintln(w)
		if len(rep.Undecryptable) > 0 {
			fmt.Fprintf(w, "%d secret(s) no configured key decrypts (left as they are): %s\n", len(rep.Undecryptable), strings.Join(rep.Undecryptable, ", "))
		}
	})
	if rerr != nil {
		return r.fail(rerr)
	}
	return ExitOK
}

func (r *opsRun) tasksRequeue(args []string) int {
	fs := r.flags()
	var sel ops.TaskSelector
	fs.StringVar(&sel.Tenant, "tenant", "", "archived tasks whose payload names this clientKey")
	fs.StringVar(&sel.Transfer, "transfer", "", "archived tasks whose payload names this transferId")
	fs.StringVar(&sel.Type, "type", "", "archived tasks of this type")
	if _, code, ok := r.parse(fs, args, 0, ""); !ok {
		return code
	}
	if err := sel.Validate(); err != nil {
		return r.fail(err)
	}
	cfg, err := config.LoadOps(r.env)
	if err != nil {
		return r.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requeueTimeout)
	defer cancel()
	q, err := ops.OpenQueue(ctx, cfg.RedisURL, r.logger())
	if err != nil {
		return r.fail(err)
	}
	defer q.Close()
	var feed ops.FeedLookup
	if sel.Type == "" {
		// event:deliver tasks name only a feed event: its tenant and transfer
		// are in the database.
		db, err := ops.Open(ctx, cfg.DatabaseURL, nil, r.logger(), r.now)
		if err != nil {
			return r.fail(err)
		}
		defer db.Close()
		feed = db.FeedLookup
	}
	rep, err := q.Requeue(ctx, sel, feed)
	if err != nil {
		return r.fail(err)
	}
	r.print(rep, func(w io.Writer) {
		fmt.Fprintf(w, "requeued %d of %d archived task(s)\n", len(rep.Requeued), rep.Archived)
		for _, t := range rep.Requeued {
			fmt.Fprintf(w, "  %s\t%s\t%s\tarchived with: %s\n", t.Queue, t.Type, t.ID, orDash(t.LastError))
		}
		if len(rep.Failed) > 0 {
			fmt.Fprintf(w, "%d could not be run again:\n", len(rep.Failed))
			for _, t := range rep.Failed {
				fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", t.Queue, t.Type, t.ID, t.LastError)
			}
		}
	})
	if len(rep.Failed) > 0 {
		return ExitFailed
	}
	return ExitOK
}
