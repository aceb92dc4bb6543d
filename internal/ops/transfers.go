package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// TransferView is a transfer as the operator commands list it.
type TransferView struct {
	TransferID  string    `json:"transferId"`
	ClientKey   string    `json:"clientKey"`
	MigrationID string    `json:"migrationId,omitempty"`
	State       string    `json:"state"`
	LastPercent int       `json:"lastPercent"`
	Settlement  string    `json:"settlement"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Settlement summaries of a transfer.
const (
	SettlementNone    = "none"    // open, no settle status decided
	SettlementOwed    = "owed"    // a settle call is still to be accepted by the product
	SettlementSettled = "settled" // the product is settled
)

func settlement(t connectrelay.Transfer) string {
	switch {
	case !t.SettledAt.IsZero():
		return SettlementSettled
	case t.SettleStatus != "":
		return SettlementOwed
	default:
		return SettlementNone
	}
}

func transferView(t connectrelay.Transfer) TransferView {
	return TransferView{
		TransferID: t.TransferID, ClientKey: t.ClientKey, MigrationID: t.Details.MigrationID, State: string(t.State),
		LastPercent: t.LastPercent, Settlement: settlement(t), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
	}
}

// ListTransfers returns the newest transfers of every tenant (limit <= 0 means
// migration.DefaultListLimit); open keeps those not settled at the product yet.
func (d *DB) ListTransfers(ctx context.Context, open bool, limit int) ([]TransferView, error) {
	if limit < 0 || limit > migration.MaxListLimit {
		return nil, fmt.Errorf("%w: --limit must be between 1 and %d, got %d", ErrInvalidArgument, migration.MaxListLimit, limit)
	}
	ts, err := d.transfers.List(ctx, migration.TransferQuery{Open: open, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]TransferView, 0, len(ts))
	for _, t := range ts {
		out = append(out, transferView(t))
	}
	return out, nil
}

// Settlement is how a transfer was (or is to be) settled at the product.
type Settlement struct {
	// Summary is none, owed or settled.
	Summary string `json:"summary"`
	// Status is SUCCESS, INCOMPLETE or FAILED once decided.
	Status string `json:"status,omitempty"`
	// Message is the message sent with the status, when not its default.
	Message string `json:"message,omitempty"`
	// Result is reported, already_settled or expired once settled.
	Result    string    `json:"result,omitempty"`
	SettledAt time.Time `json:"settledAt,omitzero"`
	// Error is the last settle call's failure.
	Error string `json:"error,omitempty"`
}

// TransferReport is everything connectctl transfers show prints.
type TransferReport struct {
	Transfer TransferView `json:"transfer"`
	// Events are the AMP events received for the transfer, oldest first.
	Events []migration.ReceivedEvent `json:"events"`
	// Uploads are the transfer's uploads, in the order they were announced.
	Uploads []migration.Upload `json:"uploads"`
	// ProgressSent is the highest IN_PROGRESS percent reported to the product.
	ProgressSent int        `json:"progressSent"`
	Settlement   Settlement `json:"settlement"`
	ReadyAt      time.Time  `json:"readyAt,omitzero"`
	FinishedAt   time.Time  `json:"finishedAt,omitzero"`
	// ErrorDetails are the listener-errored details the product gave, if any.
	ErrorDetails json.RawMessage `json:"errorDetails,omitempty"`
	// Errors lists every error recorded on the transfer and its uploads.
	Errors []string `json:"errors"`
}

// ShowTransfer reports one transfer, whatever its tenant. Errors wrap
// ErrNotFound for an unknown transfer.
func (d *DB) ShowTransfer(ctx context.Context, transferID string) (TransferReport, error) {
	if transferID == "" {
		return TransferReport{}, fmt.Errorf("%w: TRANSFERID must not be empty", ErrInvalidArgument)
	}
	t, err := d.transfers.TransferByID(ctx, transferID)
	if err != nil {
		return TransferReport{}, notFound(err)
	}
	rep := TransferReport{
		Transfer: transferView(t), ProgressSent: t.LastPercent, ReadyAt: t.ReadyAt, FinishedAt: t.FinishedAt,
		ErrorDetails: t.ErrorDetails, Errors: []string{},
		Settlement: Settlement{Summary: settlement(t), Status: t.SettleStatus, Message: t.SettleMessage,
			Result: t.SettleResult, SettledAt: t.SettledAt, Error: t.SettleError},
	}
	if rep.Events, err = d.transfers.Events(ctx, transferID, 0); err != nil {
		return TransferReport{}, err
	}
	if rep.Uploads, err = d.transfers.Uploads(ctx, transferID); err != nil {
		return TransferReport{}, err
	}
	if rep.Uploads == nil {
		rep.Uploads = []migration.Upload{}
	}
	if len(t.ErrorDetails) > 0 {
		rep.Errors = append(rep.Errors, "listener errored: "+string(t.ErrorDetails))
	}
	if t.SettleError != "" {
		rep.Errors = append(rep.Errors, "settle call: "+t.SettleError)
	}
	for _, u := range rep.Uploads {
		if u.LastError != "" {
			rep.Errors = append(rep.Errors, fmt.Sprintf("upload %s (%s): %s", u.S3Key, u.State, u.LastError))
		}
	}
	return rep, nil
}
