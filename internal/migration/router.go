package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/product"
)

// ErrForgeNotConfigured is returned by Router for a Forge installation when
// the worker was built without Forge support (no credential source): the
// transfer's calls cannot be made.
var ErrForgeNotConfigured = errors.New("migration: Forge migrations are not configured on this worker (no Forge credential source)")

// ForgeAMP is the AMP of Forge installations: the migration API, plus the
// per-message statuses the Forge platform settles by. *product.ForgeAMP
// implements it.
type ForgeAMP interface {
	AMP
	MessageAcknowledger
}

var _ ForgeAMP = (*product.ForgeAMP)(nil)

// Router is the AMP of a machine serving both platforms: a call for a Forge
// installation (a clientKey shaped as an installation ARI,
// forge.IsInstallationID) goes to Forge, any other to Connect. A nil Forge
// makes the Forge calls fail with ErrForgeNotConfigured. The zero Router has
// no Connect AMP and must not be used; both fields are read-only once the
// Router is in use.
type Router struct {
	Connect AMP
	Forge   ForgeAMP
}

var (
	_ AMP                 = Router{}
	_ MessageAcknowledger = Router{}
)

// pick returns the AMP of the tenant.
func (r Router) pick(clientKey string) (AMP, error) {
	if !forge.IsInstallationID(clientKey) {
		return r.Connect, nil
	}
	if r.Forge == nil {
		return nil, fmt.Errorf("installation %s: %w", clientKey, ErrForgeNotConfigured)
	}
	return r.Forge, nil
}

// OpenData routes AMP.OpenData.
func (r Router) OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error) {
	a, err := r.pick(clientKey)
	if err != nil {
		return nil, err
	}
	return a.OpenData(ctx, clientKey, s3Key)
}

// ReportProgress routes AMP.ReportProgress.
func (r Router) ReportProgress(ctx context.Context, clientKey, transferID string, p product.Progress) error {
	a, err := r.pick(clientKey)
	if err != nil {
		return err
	}
	return a.ReportProgress(ctx, clientKey, transferID, p)
}

// ErrorDetails routes AMP.ErrorDetails.
func (r Router) ErrorDetails(ctx context.Context, clientKey, transferID string) (json.RawMessage, error) {
	a, err := r.pick(clientKey)
	if err != nil {
		return nil, err
	}
	return a.ErrorDetails(ctx, clientKey, transferID)
}

// ListData routes AMP.ListData.
func (r Router) ListData(ctx context.Context, clientKey, transferID string) ([]product.Upload, error) {
	a, err := r.pick(clientKey)
	if err != nil {
		return nil, err
	}
	return a.ListData(ctx, clientKey, transferID)
}

// Mappings routes AMP.Mappings; a routing failure is yielded once.
func (r Router) Mappings(ctx context.Context, clientKey, transferID, namespace string, pageSize int) iter.Seq2[product.Mapping, error] {
	a, err := r.pick(clientKey)
	if err != nil {
		return func(yield func(product.Mapping, error) bool) { yield(product.Mapping{}, err) }
	}
	return a.Mappings(ctx, clientKey, transferID, namespace, pageSize)
}

// FindMappings routes AMP.FindMappings.
func (r Router) FindMappings(ctx context.Context, clientKey, transferID, namespace string, keys []string) (map[string]string, error) {
	a, err := r.pick(clientKey)
	if err != nil {
		return nil, err
	}
	return a.FindMappings(ctx, clientKey, transferID, namespace, keys)
}

// Feedback routes AMP.Feedback.
func (r Router) Feedback(ctx context.Context, clientKey, transferID string, details any) error {
	a, err := r.pick(clientKey)
	if err != nil {
		return err
	}
	return a.Feedback(ctx, clientKey, transferID, details)
}

// AcknowledgeMessages sends a Forge installation's message statuses to
// Forge; a Connect tenant has no such call (product.ErrNotSupported).
func (r Router) AcknowledgeMessages(ctx context.Context, clientKey, transferID, status string, messageIDs []string) error {
	if !forge.IsInstallationID(clientKey) {
		return fmt.Errorf("message status of transfer %s of %s: %w: Connect transfers are settled, not acknowledged per message",
			transferID, clientKey, product.ErrNotSupported)
	}
	if r.Forge == nil {
		return fmt.Errorf("installation %s: %w", clientKey, ErrForgeNotConfigured)
	}
	return r.Forge.AcknowledgeMessages(ctx, clientKey, transferID, status, messageIDs)
}
