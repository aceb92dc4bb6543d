// Command receiver is the HTTP endpoint Atlassian calls: lifecycle callbacks, the
// App Migration Platform webhook, the descriptor, health, metrics and the
// monitoring UI. It only wires; see package service.
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
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(2)
	}
	log := service.DefaultLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := service.NewReceiver(ctx, cfg, service.ReceiverOptions{Logger: log})
	if err != nil {
		log.Error("receiver failed to start", "error", err)
		os.Exit(1)
	}
	if err := r.Run(ctx); err != nil {
		log.Error("receiver stopped with an error", "error", err)
		os.Exit(1)
	}
}
