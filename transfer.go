package connectrelay

import (
	"encoding/json"
	"time"
)

// TransferState is a migration transfer's state in this service.
type TransferState string

// Transfer states. Waiting and Ready are open; the others are final and make
// every later upload of the transfer skipped.
const (
	// TransferWaiting: the transfer was seen but listener-triggered was not;
	// uploads are parked.
	TransferWaiting TransferState = "waiting"
	// TransferReady: listener-triggered was recorded; uploads are imported.
	TransferReady TransferState = "ready"
	// TransferCancelled: the platform asked for a cancellation; settled
	// INCOMPLETE.
	TransferCancelled TransferState = "cancelled"
	// TransferSucceeded: the final-labelled upload and every other known
	// upload were imported, and the product listed no other; settled SUCCESS.
	TransferSucceeded TransferState = "succeeded"
	// TransferFailed: the server-side listener errored, an upload failed, or
	// the transfer's completion could not be confirmed; settled FAILED.
	TransferFailed TransferState = "failed"
)

// Final reports whether no more imports happen in this state.
func (s TransferState) Final() bool {
	return s == TransferCancelled || s == TransferSucceeded || s == TransferFailed
}

// Settle results recorded in Transfer.SettleResult.
const (
	// SettleReported: the product accepted our settle call.
	SettleReported = "reported"
	// SettleAlreadySettled: the product answered that the transfer was already
	// settled; final.
	SettleAlreadySettled = "already_settled"
	// SettleExpired: the product answered that the transfer is past the App
	// Migration Platform's 14-day window; final. SettleError keeps the answer.
	SettleExpired = "expired"
)

// MigrationDetails is an event's migrationDetails object. Its fields are read
// liberally: a field of an unexpected JSON type (or holding control
// characters) is left empty, because only the transfer ID is needed to act,
// and the whole object is kept in Raw.
type MigrationDetails struct {
	// MigrationID is the migration the transfer belongs to.
	MigrationID      string `json:"migrationId,omitempty"`
	MigrationScopeID string `json:"migrationScopeId,omitempty"`
	// Name is the migration's name as the customer gave it.
	Name string `json:"name,omitempty"`
	// CreatedAt is the migration's creation time in epoch milliseconds, 0 if
	// absent.
	CreatedAt int64 `json:"createdAt,omitempty"`
	// JiraClientKey and ConfluenceClientKey name the destination tenants;
	// either may be "unknown".
	JiraClientKey       string `json:"jiraClientKey,omitempty"`
	ConfluenceClientKey string `json:"confluenceClientKey,omitempty"`
	// CloudURL is the destination site; informational only (requests go to the
	// tenant's stored baseUrl, never to a URL from an event).
	CloudURL string `json:"cloudUrl,omitempty"`
	// Raw is the migrationDetails object as received.
	Raw json.RawMessage `json:"-"`
}

// Transfer is one App Migration Platform transfer as this service tracks it:
// what an Importer is given and what operators see.
type Transfer struct {
	TransferID string           `json:"transferId"`
	ClientKey  string           `json:"clientKey"`
	Details    MigrationDetails `json:"migrationDetails"`
	State      TransferState    `json:"state"`
	// SettleStatus is the status the transfer settles (or settled) with:
	// SUCCESS, INCOMPLETE or FAILED; "" while it is open.
	SettleStatus string `json:"settleStatus,omitempty"`
	// SettledAt is when the product was known to be settled; zero while a
	// settle call is still owed (SettleStatus set) or none is due.
	SettledAt time.Time `json:"settledAt,omitzero"`
	// SettleResult is one of the Settle* results once SettledAt is set.
	SettleResult string `json:"settleResult,omitempty"`
	SettleError  string `json:"settleError,omitempty"`
	// SettleMessage is the message sent with the settle status when it is not
	// the status's default one (a failed upload names itself, a transfer that
	// made no progress names the reason).
	SettleMessage string          `json:"settleMessage,omitempty"`
	LastPercent   int             `json:"lastPercent"`
	ErrorDetails  json.RawMessage `json:"errorDetails,omitempty"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	ReadyAt       time.Time       `json:"readyAt,omitzero"`
	FinishedAt    time.Time       `json:"finishedAt,omitzero"`
}

// Closed reports whether the transfer takes no more imports: it reached a
// final state, or the product said it is settled.
func (t Transfer) Closed() bool { return t.State.Final() || !t.SettledAt.IsZero() }
