// Command connectctl is the Connect JWT debugging tool:
//
//	connectctl qsh METHOD URL [--base-url U]
//	connectctl jwt decode TOKEN [--method M --url U --base-url B --secret S]
//	connectctl simulate [SCENARIO...] [--listen ADDR --app URL --json --print-env ...]
//
// It prints canonical requests and query string hashes, and explains why a
// token is refused. The shared secret may come from $CONNECTCTL_SECRET so it
// stays out of shell history; it is never printed. Its operator commands
// (tenants, transfers, stale, reencrypt, tasks requeue; docs/operations.md)
// read the service's DATABASE_URL, REDIS_URL and CONNECT_SECRET_KEY; simulate
// runs a local Atlassian that plays scenarios against the app
// (docs/simulator.md). The logic lives in
// internal/ctl; main only wires it to the process.
package main

import (
	"os"
	"time"

	"github.com/connectrelay/connectrelay/cmd/connectctl/internal/ctl"
)

func main() {
	os.Exit(ctl.Run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, time.Now))
}
