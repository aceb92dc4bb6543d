// Command worker processes the tasks the receiver enqueues: tenant
// initialization, license tracking, migration webhook registration and migration
// transfers, with the bundled (recording) migration importer. Vendors with their
// own initialization and import code build their own main around
// service.NewWorker instead (see the README). It only wires; see package service.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/service"
)

func main() {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	log := service.DefaultLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	w, err := service.NewWorker(ctx, cfg, service.WorkerOptions{Logger: log})
	if err != nil {
		log.Error("worker failed to start", "error", err)
		os.Exit(1)
	}
	if err := w.Run(ctx); err != nil {
		log.Error("worker stopped with an error", "error", err)
		os.Exit(1)
	}
}
