package migration

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/jsonobj"
)

// This file holds every wire shape of the Forge migration events
// (https://developer.atlassian.com/platform/app-migration/apis/forge/events/),
// so that a detail the documentation leaves open is corrected here only. The
// REST side is product/forge_amp.go. UNCONFIRMED:
//
//   - the envelope of an event delivered to a remote endpoint: top level, or
//     wrapped as {"payload": {...}}; both are accepted (forge.Unwrap);
//   - messageId: the events page lists no such member, the REST API and the
//     @forge/migrations messageProcessed(transferId, messageId) call need it;
//     it is read when present and the dedupe key falls back to the content
//     without it;
//   - that a re-sent event keeps its messageId (the dedupe key assumes it);
//   - which events must be acknowledged: the platform asks for uploaded:app_data;
//     triggered:listener is acknowledged too, the others are not;
//   - the label member of uploaded:app_data ("label?" in third-party fixtures).

// The Forge migration event types, as the platform names them in eventType.
const (
	// ForgeEventListenerTriggered is the Forge name of EventListenerTriggered.
	ForgeEventListenerTriggered = "avi:ecosystem.migration:triggered:listener"
	// ForgeEventAppDataUploaded is the Forge name of EventAppDataUploaded; its
	// upload is named by "key".
	ForgeEventAppDataUploaded = "avi:ecosystem.migration:uploaded:app_data"
	// ForgeEventTransferCancellationRequested is the Forge name of
	// EventTransferCancellationRequested.
	ForgeEventTransferCancellationRequested = "avi:ecosystem.migration:requested:transfer_cancellation"
	// ForgeEventListenerErrored is the Forge name of EventListenerErrored.
	ForgeEventListenerErrored = "avi:ecosystem.migration:errored:listener"
	// ForgeEventExportPhaseCompleted says the server app called
	// completeExport(); it is recorded for operators, not acted on.
	ForgeEventExportPhaseCompleted = "avi:ecosystem.migration:completed:export_phase"
	// ForgeEventTransferSettled says the platform settled the transfer; it is
	// recorded for operators, not acted on (the platform's 409 answers close
	// the transfer here).
	ForgeEventTransferSettled = "avi:ecosystem.migration:settled:transfer"
)

// forgeTypes maps the Forge event types with behaviour onto the machine's
// types.
var forgeTypes = map[string]EventType{
	ForgeEventListenerTriggered:             EventListenerTriggered,
	ForgeEventAppDataUploaded:               EventAppDataUploaded,
	ForgeEventTransferCancellationRequested: EventTransferCancellationRequested,
	ForgeEventListenerErrored:               EventListenerErrored,
}

// Forge field names.
const (
	forgeFieldKey = "key"
)

// ParseForgeEvent validates and parses a Forge migration event delivered to a
// remote endpoint, whose Forge Invocation Token the caller verified: the body
// may hold the event at the top level or as {"payload": {...}}. The four
// Forge types with behaviour (triggered:listener, uploaded:app_data,
// requested:transfer_cancellation, errored:listener) get the machine's
// EventType and need a string transferId and an object migrationDetails, and
// uploaded:app_data a string key (the upload's s3Key); every other type,
// completed:export_phase and settled:transfer included, keeps its Forge name
// as Type and is recorded, not acted on, as ParseEvent does with unknown
// types. ForgeType is set to the Forge name in every case and Raw to the
// unwrapped event. Every error wraps ErrInvalidEvent and names the field.
func ParseForgeEvent(body []byte) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, invalid("body is not valid UTF-8")
	}
	raw, _, err := forge.Unwrap(body)
	if err != nil {
		return Event{}, invalid("%v", err)
	}
	top, err := jsonobj.Members(raw)
	if err != nil || top == nil {
		return Event{}, invalid("event is not a JSON object")
	}
	wire, err := requiredString(top, "eventType")
	if err != nil {
		return Event{}, err
	}
	ev := Event{ForgeType: wire, Type: EventType(wire)}
	if t, ok := forgeTypes[wire]; ok {
		ev.Type = t
	}
	known := ev.Known()
	if known {
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
	if ev.Type == EventAppDataUploaded {
		if ev.S3Key, err = requiredString(top, forgeFieldKey); err != nil {
			return Event{}, err
		}
		if ev.Label, _, err = optionalString(top, "label"); err != nil {
			return Event{}, err
		}
	}
	rawDetails, ok := top["migrationDetails"]
	switch {
	case !ok && known:
		return Event{}, invalid("missing migrationDetails")
	case !ok:
		rawDetails = json.RawMessage(`{}`)
	}
	if ev.Details, err = parseDetails(rawDetails); err != nil {
		return Event{}, err
	}
	ev.Raw = bytes.Clone(raw)
	return ev, nil
}

// ParseEventOf parses an event delivered by the tenant clientKey: a Forge
// event (ParseForgeEvent) when clientKey is a Forge installation ARI, which
// is how Forge installations are keyed, a Connect webhook (ParseEvent)
// otherwise. The worker re-parses queued events with it.
func ParseEventOf(clientKey string, body []byte) (Event, error) {
	if forge.IsInstallationID(clientKey) {
		return ParseForgeEvent(body)
	}
	return ParseEvent(body)
}
