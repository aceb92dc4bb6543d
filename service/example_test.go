package service_test

import (
	"context"
	"io"
	"log/slog"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/service"
)

// onboarding runs after every verified installed (so it must be idempotent).
type onboarding struct{}

func (onboarding) InitializeTenant(ctx context.Context, t tenant.Tenant, api *product.Client) error {
	// t has no secret; api calls t's product as the app (JWT-signed, retries, typed errors).
	var me struct {
		AccountID string `json:"accountId"`
	}
	return api.Do(ctx, t.ClientKey, product.Request{Path: "/rest/api/3/myself", Route: "/rest/api/3/myself"}, &me)
}

// importer receives each uploaded file of a migration once it may be imported.
type importer struct{}

func (importer) Import(ctx context.Context, tr migration.Transfer, label, s3Key string, data io.Reader) error {
	// Return nil only once the data is durably imported; make it idempotent by
	// (tr.TransferID, s3Key): a crash right after it returns calls it again.
	_, err := io.Copy(io.Discard, data)
	return err
}

// A vendor's worker binary: the bundled worker with their own initialization and
// import code plugged in (the README shows the same program).
func Example_vendorWorker() {
	service.Main("worker", func(ctx context.Context, cfg config.Config, log *slog.Logger) (service.Runner, error) {
		return service.NewWorker(ctx, cfg, service.WorkerOptions{Logger: log, Initializer: onboarding{}, Importer: importer{}})
	})
}
