package tasks

import (
	"context"

	"github.com/hibiken/asynq"
)

// tenantInit runs the initialization of a tenant after a verified installed.
func (h *Handlers) tenantInit(ctx context.Context, t *asynq.Task) error {
	p, err := decodeTenant(t)
	if err != nil {
		return err
	}
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	if err := h.d.Lifecycle.Initialize(ctx, p.ClientKey); err != nil {
		return permanent(err)
	}
	return nil
}

// forgeInit runs the initialization of a Forge installation (its ClientKey
// is the installationId) after a verified Forge installed or upgraded.
func (h *Handlers) forgeInit(ctx context.Context, t *asynq.Task) error {
	p, err := decodeTenant(t)
	if err != nil {
		return err
	}
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	if err := h.d.Lifecycle.ForgeInitialize(ctx, p.ClientKey); err != nil {
		return permanent(err)
	}
	return nil
}
