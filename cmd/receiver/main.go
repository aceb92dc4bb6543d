// Command receiver is the HTTP endpoint Atlassian calls: lifecycle callbacks, the
// App Migration Platform webhook, the descriptor, health, metrics and the
// monitoring UI. It only wires; see package service.
package main

import (
	"context"
	"log/slog"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/service"
)

func main() {
	service.Main("receiver", func(ctx context.Context, cfg config.Config, log *slog.Logger) (service.Runner, error) {
		return service.NewReceiver(ctx, cfg, service.ReceiverOptions{Logger: log})
	})
}
