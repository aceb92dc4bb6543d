// Command worker processes the tasks the receiver enqueues: tenant
// initialization, license tracking, migration webhook registration and migration
// transfers, with the bundled (recording) migration importer. Vendors with their
// own initialization and import code build their own main around
// service.NewWorker instead (see the README). It only wires; see package service.
package main

import (
	"context"
	"log/slog"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/service"
)

func main() {
	service.Main("worker", func(ctx context.Context, cfg config.Config, log *slog.Logger) (service.Runner, error) {
		return service.NewWorker(ctx, cfg, service.WorkerOptions{Logger: log})
	})
}
