package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/connectrelay/connectrelay/internal/simulator"
)

// InternalTokenEnv is where simulate reads the app's internal API token, the
// variable the receiver itself reads.
const InternalTokenEnv = "INTERNAL_TOKEN"

const simulateUsage = `usage:
  connectctl simulate [SCENARIO...] [flags]
      run a local Atlassian (install-key server, product sites, and Forge's
      JWKS and api on --listen) and play scenarios against the app at --app;
      SCENARIO is tour (the default) or one of: %s
  connectctl simulate --print-env [--listen ADDR] [--forge-app-id ID]
      print the environment the app needs to trust the simulator
flags:
`

// simulateFlags are the parsed flags of connectctl simulate.
type simulateFlags struct {
	listen, app, internal, big string
	forgeApp                   string
	json, printEnv, keep       bool
	timeout                    time.Duration
	opts                       simulator.Options
}

func parseSimulate(args []string, stderr io.Writer) (*simulateFlags, []string, error) {
	f := &simulateFlags{}
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.listen, "listen", simulator.DefaultListen, "address of the simulator (key server and product sites)")
	fs.StringVar(&f.app, "app", simulator.DefaultApp, "base URL the app (receiver) answers on")
	fs.StringVar(&f.internal, "internal", "http://127.0.0.1:8081", "the receiver's internal listener, for the checks reading its /v1 API (with $"+InternalTokenEnv+")")
	fs.StringVar(&f.forgeApp, "forge-app-id", simulator.DefaultForgeAppID, "the Forge app the simulator signs tokens for (the app's FORGE_APP_ID)")
	fs.BoolVar(&f.json, "json", false, "print the timeline and results as JSON lines")
	fs.BoolVar(&f.printEnv, "print-env", false, "print the environment the app needs to trust the simulator, and exit")
	fs.BoolVar(&f.keep, "keep-serving", false, "after the scenarios, keep serving the key server and sites until interrupted")
	fs.DurationVar(&f.timeout, "timeout", simulator.DefaultTimeout, "how long to wait for the worker at each step")
	fs.IntVar(&f.opts.Uploads, "uploads", 3, "migration, forge-migration: number of uploads")
	fs.BoolVar(&f.opts.OutOfOrder, "out-of-order", false, "migration, forge-migration: uploads before listener-triggered, the final one first")
	fs.BoolVar(&f.opts.Duplicates, "duplicates", false, "migration, forge-migration: send every event again (forge-migration: with new tokens)")
	fs.BoolVar(&f.opts.NoMessageID, "no-message-id", false, "migration, forge-migration: events without messageId")
	fs.BoolVar(&f.opts.Cancel, "cancel", false, "migration, forge-migration: request the transfer's cancellation after one upload")
	fs.BoolVar(&f.opts.ListenerErrored, "listener-errored", false, "migration, forge-migration: the vendor's listener fails (listener-errored)")
	fs.StringVar(&f.big, "big", "", "migration, forge-migration: the final upload has this size, generated and streamed (e.g. 1GiB)")
	fs.IntVar(&f.opts.Tenants, "tenants", 20, "storm: number of tenants")
	fs.Usage = func() {} // errors are one line; -h prints the usage below
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, simulateUsage, strings.Join(simulator.Scenarios(), ", "))
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	switch {
	case f.opts.Uploads < 1:
		return nil, nil, fmt.Errorf("--uploads %d: want at least 1", f.opts.Uploads)
	case f.opts.Tenants < 1:
		return nil, nil, fmt.Errorf("--tenants %d: want at least 1", f.opts.Tenants)
	case f.opts.Cancel && f.opts.ListenerErrored:
		return nil, nil, errors.New("--cancel and --listener-errored: a transfer ends one way; give one of them")
	case f.timeout <= 0:
		return nil, nil, fmt.Errorf("--timeout %s: want a positive duration", f.timeout)
	}
	if f.big != "" {
		n, err := simulator.ParseSize(f.big)
		if err != nil {
			return nil, nil, errors.New(settingError(err))
		}
		f.opts.Big = n
	}
	for _, p := range pos {
		if p != "tour" && simulator.Describe(p) == "" {
			return nil, nil, fmt.Errorf("unknown scenario %q (want tour or one of %s)", p, strings.Join(simulator.Scenarios(), ", "))
		}
	}
	return f, pos, nil
}

// settingError is the message of a simulator configuration error without
// the package's prefix: it already names the flag.
func settingError(err error) string {
	return strings.TrimPrefix(err.Error(), simulator.ErrConfig.Error()+": ")
}

func runSimulate(args []string, env Env, stdout, stderr io.Writer) int {
	f, names, err := parseSimulate(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "connectctl simulate: %v\n", err)
		return ExitUsage
	}
	if f.printEnv {
		lines, err := simulator.Env(f.listen, f.forgeApp)
		if err != nil {
			fmt.Fprintf(stderr, "connectctl simulate: %v\n", settingError(err))
			return ExitUsage
		}
		fmt.Fprintln(stdout, strings.Join(lines, "\n"))
		return ExitOK
	}
	if _, err := simulator.Env(f.listen, f.forgeApp); err != nil {
		fmt.Fprintf(stderr, "connectctl simulate: %v\n", settingError(err))
		return ExitUsage
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		fmt.Fprintf(stderr, "connectctl simulate: --listen %s: %v\n", f.listen, err)
		return ExitFailed
	}
	sim, err := simulator.New(simulator.Config{App: f.app, Internal: f.internal, InternalToken: env(InternalTokenEnv), Timeout: f.timeout, ForgeAppID: f.forgeApp}, ln)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "connectctl simulate: %v\n", settingError(err))
		return ExitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sim.Close(sctx)
	}()
	p := simulator.NewPrinter(stdout, f.json)
	sum, err := sim.Run(ctx, names, f.opts, p)
	if err != nil {
		p.Message("connectctl simulate: %v", err)
		if ctx.Err() != nil {
			return ExitInterrupted
		}
		return ExitFailed
	}
	p.Summary(sum)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "connectctl simulate: interrupted; the results above are partial")
		return ExitInterrupted
	}
	code := ExitOK
	if sum.Failed > 0 || sum.Passed == 0 {
		code = ExitFailed
	}
	if f.keep {
		fmt.Fprintf(stderr, "connectctl simulate: still serving the key server, sites and Forge on %s (Ctrl-C to stop)\n", sim.Origin())
		<-ctx.Done()
	}
	return code
}
