package migration

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/jsonobj"
)

// EventType is the AMP webhook's eventType. Values outside the known constants are
// kept as they came: the platform adds event types without notice.
type EventType string

// The event types this service acts on (docs/protocol.md#app-migration-platform-connect).
const (
	// EventListenerTriggered starts a transfer: uploads may be imported from now on.
	EventListenerTriggered EventType = "listener-triggered"
	// EventAppDataUploaded announces one uploaded file (s3Key), in any order relative
	// to EventListenerTriggered.
	EventAppDataUploaded EventType = "app-data-uploaded"
	// EventListenerErrored reports that the app's server-side listener failed; the
	// transfer is settled FAILED.
	EventListenerErrored EventType = "listener-errored"
	// EventTransferCancellationRequested asks the app to stop; the transfer is
	// settled INCOMPLETE.
	EventTransferCancellationRequested EventType = "transfer-cancellation-requested"
)

// Known reports whether this service has behaviour for the type. Unknown types are
// recorded for operators and otherwise ignored.
func (t EventType) Known() bool {
	switch t {
	case EventListenerTriggered, EventAppDataUploaded, EventListenerErrored, EventTransferCancellationRequested:
		return true
	}
	return false
}

// ErrInvalidEvent is wrapped by ParseEvent errors: the body is not an AMP event the
// service can record. The receiver answers 400, the worker drops the task.
var ErrInvalidEvent = errors.New("invalid migration event")

// maxFieldLen bounds every identifier and label taken from an event. S3 keys are at
// most 1024 bytes; the rest are UUIDs and short labels. The bound keeps keys of
// Redis, asynq task IDs and index entries small whatever a body holds.
const maxFieldLen = 2048

// Event is one parsed AMP webhook body. Build it with ParseEvent: the machine relies
// on the validation done there (required fields, no control characters).
type Event struct {
	// Type is the eventType, possibly one this service does not know.
	Type EventType
	// TransferID identifies the transfer; every AMP call needs it.
	TransferID string
	// MessageID is "" when the platform sent none (the documented examples have
	// none); DedupeKey then falls back to the content.
	MessageID string
	// CloudAppKey is the app key the platform addressed; informational.
	CloudAppKey string
	// S3Key and Label are set for app-data-uploaded. S3Key is read from "s3Key" or,
	// failing that, "key" (the field name of Connect events is unconfirmed; Forge
	// uses "key").
	S3Key   string
	Label   string
	Details connectrelay.MigrationDetails
	// ForgeType is the Forge eventType as received (ForgeEventAppDataUploaded,
	// ...) when the event came from Forge (ParseForgeEvent), "" for a Connect
	// webhook. Type is then the machine's name for it, or the Forge name for
	// a type without behaviour.
	ForgeType string
	// Raw is the body as received (a Forge event unwrapped from its
	// envelope), recorded in migration_events.
	Raw json.RawMessage
}

// Known reports whether the event's type has behaviour in this service.
func (e Event) Known() bool { return e.Type.Known() }

// ParseEvent validates and parses an AMP webhook body. It requires a JSON object
// with string eventType and transferId and an object migrationDetails, plus a
// string s3Key (or key) for app-data-uploaded; other fields are optional and
// unknown fields are ignored (kept in Raw). Unknown event types parse without
// error and need only eventType. Every error wraps ErrInvalidEvent.
//
// The body must be UTF-8 and the fields it reads must not contain control
// characters: they become Postgres text, Redis keys and URL path segments, and a
// value none of those can hold would turn into a task that fails forever.
func ParseEvent(body []byte) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, invalid("body is not valid UTF-8")
	}
	top, err := jsonobj.Members(body)
	if err != nil {
		return Event{}, invalid("body is not a JSON object: %v", err)
	}
	if top == nil {
		return Event{}, invalid("body is not a JSON object")
	}
	var (
		ev  Event
		typ string
	)
	if typ, err = requiredString(top, "eventType"); err != nil {
		return Event{}, err
	}
	ev.Type = EventType(typ)
	// An event type this service does not know yet is only recorded, so it is
	// accepted without the fields the known types need: refusing it would make
	// the platform re-send it forever.
	if ev.Known() {
		ev.TransferID, err = requiredString(top, "transferId")
	} else {
		ev.TransferID, _, err = optionalString(top, "transferId")
	}
	if err != nil {
		return Event{}, err
	}
	if ev.MessageID, _, err = optionalString(top, "messageId"); err != nil {
		return Event{}, err
	}
	if ev.CloudAppKey, _, err = optionalString(top, "cloudAppKey"); err != nil {
		return Event{}, err
	}
	if ev.Type == EventAppDataUploaded {
		var ok bool
		if ev.S3Key, ok, err = optionalString(top, "s3Key"); err != nil {
			return Event{}, err
		}
		if !ok || ev.S3Key == "" {
			if ev.S3Key, err = requiredString(top, "key"); err != nil {
				return Event{}, invalid("app-data-uploaded without s3Key (or key)")
			}
		}
		if ev.Label, _, err = optionalString(top, "label"); err != nil {
			return Event{}, err
		}
	}
	rawDetails, ok := top["migrationDetails"]
	if !ok && ev.Known() {
		return Event{}, invalid("missing migrationDetails")
	}
	if !ok {
		rawDetails = json.RawMessage(`{}`)
	}
	if ev.Details, err = parseDetails(rawDetails); err != nil {
		return Event{}, err
	}
	ev.Raw = bytes.Clone(body)
	return ev, nil
}

// parseDetails reads a migrationDetails object liberally (see connectrelay.MigrationDetails).
// It is also used on the copy stored with a transfer.
func parseDetails(raw json.RawMessage) (connectrelay.MigrationDetails, error) {
	m, err := jsonobj.Members(raw)
	if err != nil || m == nil {
		return connectrelay.MigrationDetails{}, invalid("migrationDetails is not a JSON object")
	}
	d := connectrelay.MigrationDetails{Raw: bytes.Clone(raw)}
	for _, f := range [...]struct {
		name string
		dst  *string
	}{
		{"migrationId", &d.MigrationID},
		{"migrationScopeId", &d.MigrationScopeID},
		{"name", &d.Name},
		{"jiraClientKey", &d.JiraClientKey},
		{"confluenceClientKey", &d.ConfluenceClientKey},
		{"cloudUrl", &d.CloudURL},
	} {
		v, present := m[f.name]
		if !present {
			continue
		}
		s, ok := jsonobj.String(v)
		if !ok || checkField(f.name, s) != nil {
			continue // not a string, or not storable: left empty (kept in Raw)
		}
		*f.dst = s
	}
	var n json.Number
	if v, ok := m["createdAt"]; ok && json.Unmarshal(v, &n) == nil {
		if v, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			d.CreatedAt = v
		}
	}
	return d, nil
}

// ClientKeys returns the tenants the event says the migration belongs to: the
// migrationDetails jiraClientKey and confluenceClientKey values other than "" and
// "unknown". The receiver accepts the event only from one of them.
func (e Event) ClientKeys() []string {
	var keys []string
	for _, k := range []string{e.Details.JiraClientKey, e.Details.ConfluenceClientKey} {
		if k == "" || k == "unknown" {
			continue
		}
		if len(keys) == 1 && keys[0] == k {
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// DedupeKey identifies the event across re-deliveries: "msg:" + messageId when the
// platform sent one, otherwise "content:" + the hex SHA-256 of a length-prefixed
// encoding of eventType (ForgeType for a Forge event), transferId, s3Key, label
// and migrationId. It is never derived from the delivery's credentials (a Forge
// retry carries a new token, and so a new jti). Length prefixes
// make the encoding injective, so two different events never share a content key
// by concatenation ("ab"+"c" vs "a"+"bc").
func (e Event) DedupeKey() string {
	if e.MessageID != "" {
		return "msg:" + e.MessageID
	}
	h := sha256.New()
	var n [8]byte
	typ := string(e.Type)
	if e.ForgeType != "" {
		typ = e.ForgeType
	}
	for _, f := range []string{typ, e.TransferID, e.S3Key, e.Label, e.Details.MigrationID} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return "content:" + hex.EncodeToString(h.Sum(nil))
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// optionalString reads a string field; absent and null are ("", false, nil).
func optionalString(m map[string]json.RawMessage, name string) (string, bool, error) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	s, ok := jsonobj.String(raw)
	if !ok {
		return "", false, invalid("%s is not a string", name)
	}
	if err := checkField(name, s); err != nil {
		return "", false, err
	}
	return s, true, nil
}

func requiredString(m map[string]json.RawMessage, name string) (string, error) {
	s, ok, err := optionalString(m, name)
	if err != nil {
		return "", err
	}
	if !ok || s == "" {
		return "", invalid("missing %s", name)
	}
	return s, nil
}

func checkField(name, s string) error {
	if len(s) > maxFieldLen {
		return invalid("%s is longer than %d bytes", name, maxFieldLen)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid("%s contains a control character", name)
		}
	}
	return nil
}
