package service_test

import (
	"context"
	"io"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/service"
)

// onboarding runs after every verified installed (so it must be idempotent).
type onboarding struct{}

func (onboarding) InitializeTenant(ctx context.Context, req *connectrelay.InitRequest) error {
	// req.Tenant has no secret; req.Product calls its product as your app
	// (JWT-signed, retried, typed errors).
	var me struct {
		AccountID string `json:"accountId"`
	}
	return req.Product.Get(ctx, req.Tenant.ID(), "/rest/api/3/myself", &me)
}

// importer receives each uploaded file of a migration once it may be imported.
type importer struct{}

func (importer) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	// Stream req.Data into your store. Return nil only once it is durably
	// imported; an error retries the upload. If the worker dies right after
	// you return nil, you are called once more for the same upload, so make
	// this idempotent by (req.Transfer.TransferID, req.S3Key).
	_, err := io.Copy(io.Discard, req.Data)
	return err
}

func Example_vendorWorker() {
	// Loads the configuration, runs until SIGTERM, shuts down gracefully.
	service.RunWorker(service.WorkerOptions{Initializer: onboarding{}, Importer: importer{}})
}
