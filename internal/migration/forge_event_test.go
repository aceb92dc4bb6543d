package migration_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/connectrelay/connectrelay/internal/migration"
)

const (
	forgeTransfer = "5f1f0c2e-1a8b-4b1c-9f0e-5b1f6f0f2c1a"
	forgeDetails  = `{"migrationId":"fd2b0ea1-0000-4000-8000-000000000000","migrationScopeId":"scope-1",` +
		`"createdAt":1702530783417,"cloudUrl":"https://example.atlassian.net","name":"My Forge migration"}`
)

// forgeBody is a Forge migration event of the documented shape.
func forgeBody(eventType string, extra string) string {
	b := `{"eventType":"` + eventType + `","transferId":"` + forgeTransfer + `","migrationDetails":` + forgeDetails
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

func TestParseForgeEvent(t *testing.T) {
	t.Parallel()
	details := connectrelay.MigrationDetails{
		MigrationID: "fd2b0ea1-0000-4000-8000-000000000000", MigrationScopeID: "scope-1", CreatedAt: 1702530783417,
		CloudURL: "https://example.atlassian.net", Name: "My Forge migration",
	}
	tests := []struct {
		desc string
		body string
		want migration.Event
	}{
		{
			desc: "triggered:listener",
			body: forgeBody(migration.ForgeEventListenerTriggered, `"messageId":"m-1"`),
			want: migration.Event{Type: migration.EventListenerTriggered, ForgeType: migration.ForgeEventListenerTriggered,
				TransferID: forgeTransfer, MessageID: "m-1", Details: details},
		},
		{
			desc: "uploaded:app_data with key and label",
			body: forgeBody(migration.ForgeEventAppDataUploaded, `"messageId":"m-2","key":"s3/k1","label":"final"`),
			want: migration.Event{Type: migration.EventAppDataUploaded, ForgeType: migration.ForgeEventAppDataUploaded,
				TransferID: forgeTransfer, MessageID: "m-2", S3Key: "s3/k1", Label: "final", Details: details},
		},
		{
			desc: "uploaded:app_data without label or messageId",
			body: forgeBody(migration.ForgeEventAppDataUploaded, `"key":"s3/k1"`),
			want: migration.Event{Type: migration.EventAppDataUploaded, ForgeType: migration.ForgeEventAppDataUploaded,
				TransferID: forgeTransfer, S3Key: "s3/k1", Details: details},
		},
		{
			desc: "requested:transfer_cancellation",
			body: forgeBody(migration.ForgeEventTransferCancellationRequested, `"messageId":"m-3"`),
			want: migration.Event{Type: migration.EventTransferCancellationRequested,
				ForgeType: migration.ForgeEventTransferCancellationRequested, TransferID: forgeTransfer, MessageID: "m-3", Details: details},
		},
		{
			desc: "errored:listener",
			body: forgeBody(migration.ForgeEventListenerErrored, `"messageId":"m-4"`),
			want: migration.Event{Type: migration.EventListenerErrored, ForgeType: migration.ForgeEventListenerErrored,
				TransferID: forgeTransfer, MessageID: "m-4", Details: details},
		},
		{
			desc: "completed:export_phase is recorded only",
			body: forgeBody(migration.ForgeEventExportPhaseCompleted, `"messageId":"m-5"`),
			want: migration.Event{Type: migration.ForgeEventExportPhaseCompleted, ForgeType: migration.ForgeEventExportPhaseCompleted,
				TransferID: forgeTransfer, MessageID: "m-5", Details: details},
		},
		{
			desc: "settled:transfer is recorded only",
			body: forgeBody(migration.ForgeEventTransferSettled, `"messageId":"m-6"`),
			want: migration.Event{Type: migration.ForgeEventTransferSettled, ForgeType: migration.ForgeEventTransferSettled,
				TransferID: forgeTransfer, MessageID: "m-6", Details: details},
		},
		{
			desc: "an unknown type needs only eventType",
			body: `{"eventType":"avi:ecosystem.migration:preloaded:app_data"}`,
			want: migration.Event{Type: "avi:ecosystem.migration:preloaded:app_data", ForgeType: "avi:ecosystem.migration:preloaded:app_data"},
		},
		{
			desc: "a Connect name under Forge is not mapped",
			body: `{"eventType":"listener-triggered","transferId":"t","migrationDetails":{}}`,
			want: migration.Event{Type: migration.EventListenerTriggered, ForgeType: "listener-triggered", TransferID: "t"},
		},
		{
			desc: "s3Key is not a Forge member: key is",
			body: forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k","s3Key":"other"`),
			want: migration.Event{Type: migration.EventAppDataUploaded, ForgeType: migration.ForgeEventAppDataUploaded,
				TransferID: forgeTransfer, S3Key: "k", Details: details},
		},
	}
	ignore := cmpopts.IgnoreFields(migration.Event{}, "Raw")
	ignoreDetailsRaw := cmpopts.IgnoreFields(connectrelay.MigrationDetails{}, "Raw")
	for _, tc := range tests {
		for _, env := range []struct{ name, body string }{
			{"top level", tc.body},
			{"payload envelope", `{"payload":` + tc.body + `,"retryContext":{"retryCount":2}}`},
		} {
			t.Run(tc.desc+"/"+env.name, func(t *testing.T) {
				got, err := migration.ParseForgeEvent([]byte(env.body))
				if err != nil {
					t.Fatalf("ParseForgeEvent: %v", err)
				}
				if diff := cmp.Diff(tc.want, got, ignore, ignoreDetailsRaw); diff != "" {
					t.Errorf("ParseForgeEvent (-want +got):\n%s", diff)
				}
				if string(got.Raw) != tc.body {
					t.Errorf("Raw = %s, want the unwrapped event %s", got.Raw, tc.body)
				}
				if got.Known() != (tc.want.Type == migration.EventListenerTriggered || tc.want.Type == migration.EventAppDataUploaded ||
					tc.want.Type == migration.EventTransferCancellationRequested || tc.want.Type == migration.EventListenerErrored) {
					t.Errorf("Known() = %v for %s", got.Known(), got.Type)
				}
			})
		}
	}
}

func TestParseForgeEventRejects(t *testing.T) {
	t.Parallel()
	upload := migration.ForgeEventAppDataUploaded
	tests := []struct{ desc, body, field string }{
		{"empty", ``, "JSON object"},
		{"array", `[]`, "JSON object"},
		{"payload not an object", `{"payload":"x"}`, "payload"},
		{"missing eventType", `{"transferId":"t","migrationDetails":{}}`, "eventType"},
		{"missing eventType in payload", `{"payload":{"transferId":"t","migrationDetails":{}}}`, "eventType"},
		{"eventType not a string", `{"eventType":7}`, "eventType"},
		{"missing transferId", `{"eventType":"` + migration.ForgeEventListenerTriggered + `","migrationDetails":{}}`, "transferId"},
		{"missing transferId in payload", `{"payload":{"eventType":"` + migration.ForgeEventListenerErrored + `","migrationDetails":{}}}`, "transferId"},
		{"missing migrationDetails", `{"eventType":"` + migration.ForgeEventTransferCancellationRequested + `","transferId":"t"}`, "migrationDetails"},
		{"migrationDetails not an object", `{"eventType":"` + migration.ForgeEventListenerTriggered + `","transferId":"t","migrationDetails":[]}`, "migrationDetails"},
		{"upload without key", forgeBody(upload, `"label":"x"`), "key"},
		{"upload with empty key", forgeBody(upload, `"key":""`), "key"},
		{"upload key not a string", forgeBody(upload, `"key":1`), "key"},
		{"upload key too long", forgeBody(upload, `"key":"`+strings.Repeat("k", 2049)+`"`), "key"},
		{"upload key with a control character", forgeBody(upload, `"key":"a\u0007b"`), "key"},
		{"label not a string", forgeBody(upload, `"key":"k","label":{}`), "label"},
		{"messageId too long", forgeBody(upload, `"key":"k","messageId":"`+strings.Repeat("m", 2049)+`"`), "messageId"},
		{"messageId not a string", forgeBody(migration.ForgeEventListenerTriggered, `"messageId":3`), "messageId"},
		{"transferId too long", `{"eventType":"` + migration.ForgeEventListenerTriggered + `","transferId":"` + strings.Repeat("t", 2049) + `","migrationDetails":{}}`, "transferId"},
		{"invalid UTF-8", "{\"eventType\":\"x\xff\"}", "UTF-8"},
		{"body over the Forge limit", `{"eventType":"x","pad":"` + strings.Repeat("p", 1<<20) + `"}`, "exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ev, err := migration.ParseForgeEvent([]byte(tc.body))
			if !errors.Is(err, migration.ErrInvalidEvent) {
				t.Fatalf("ParseForgeEvent = %+v, %v; want ErrInvalidEvent", ev, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestForgeDedupeKey(t *testing.T) {
	t.Parallel()
	parse := func(body string) migration.Event {
		t.Helper()
		ev, err := migration.ParseForgeEvent([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	withID := parse(forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k","messageId":"m-9"`))
	if got := withID.DedupeKey(); got != "msg:m-9" {
		t.Errorf("DedupeKey with messageId = %q, want msg:m-9", got)
	}
	// A retry comes in the other envelope: same event, same key.
	body := forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k"`)
	k := parse(body).DedupeKey()
	if got := parse(`{"payload":` + body + `}`).DedupeKey(); got != k {
		t.Errorf("wrapped DedupeKey = %s, want %s", got, k)
	}
	different := []string{
		forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k2"`),
		forgeBody(migration.ForgeEventListenerTriggered, ""),
		forgeBody(migration.ForgeEventListenerErrored, ""),
		forgeBody(migration.ForgeEventExportPhaseCompleted, ""),
	}
	seen := map[string]string{k: body}
	for _, b := range different {
		got := parse(b).DedupeKey()
		if prev, dup := seen[got]; dup {
			t.Errorf("DedupeKey(%s) = DedupeKey(%s)", b, prev)
		}
		seen[got] = b
	}
	// The Forge and the Connect event of one content are different events.
	connect, err := migration.ParseEvent([]byte(`{"eventType":"listener-triggered","transferId":"` + forgeTransfer + `","migrationDetails":` + forgeDetails + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if connect.DedupeKey() == parse(forgeBody(migration.ForgeEventListenerTriggered, "")).DedupeKey() {
		t.Error("a Connect and a Forge event share a content key")
	}
}

func TestParseEventOf(t *testing.T) {
	t.Parallel()
	const installation = "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5"
	forgeEv := forgeBody(migration.ForgeEventListenerTriggered, "")
	ev, err := migration.ParseEventOf(installation, []byte(forgeEv))
	if err != nil || ev.Type != migration.EventListenerTriggered || ev.ForgeType == "" {
		t.Errorf("Forge installation: %+v, %v; want a Forge listener-triggered", ev, err)
	}
	// A Connect tenant's event is parsed as Connect: the Forge name is unknown there.
	ev, err = migration.ParseEventOf("jira:tenant", []byte(forgeEv))
	if err != nil || ev.Known() || ev.ForgeType != "" {
		t.Errorf("Connect tenant: %+v, %v; want an unknown Connect event", ev, err)
	}
}

func FuzzParseForgeEvent(f *testing.F) {
	for _, s := range []string{
		forgeBody(migration.ForgeEventListenerTriggered, `"messageId":"m"`),
		forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k","label":"final","messageId":"m"`),
		`{"payload":` + forgeBody(migration.ForgeEventAppDataUploaded, `"key":"k"`) + `}`,
		`{"payload":` + forgeBody(migration.ForgeEventTransferSettled, "") + `,"retryContext":{"retryCount":1}}`,
		forgeBody(migration.ForgeEventListenerErrored, `"messageId":null`),
		`{"payload":{"payload":{}}}`, `{"payload":null}`, `{"eventType":"x","payload":{}}`,
		`null`, `{}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := migration.ParseForgeEvent(body)
		if err != nil {
			if !errors.Is(err, migration.ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if ev.ForgeType == "" || ev.Type == "" {
			t.Fatalf("accepted event without type: %+v", ev)
		}
		if ev.Known() && ev.TransferID == "" {
			t.Fatalf("accepted known event without transfer: %+v", ev)
		}
		if ev.Type == migration.EventAppDataUploaded && ev.S3Key == "" {
			t.Fatalf("accepted upload without key: %+v", ev)
		}
		if !json.Valid(ev.Raw) || !json.Valid(ev.Details.Raw) {
			t.Fatalf("raw parts are not JSON: %q / %q", ev.Raw, ev.Details.Raw)
		}
		for _, s := range []string{ev.ForgeType, ev.TransferID, ev.MessageID, ev.S3Key, ev.Label} {
			if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 || len(s) > 2048 {
				t.Fatalf("unstorable field %q in %+v", s, ev)
			}
		}
		// The recorded Raw (unwrapped) parses to the same event.
		again, err := migration.ParseForgeEvent(ev.Raw)
		if err != nil {
			t.Fatalf("re-parse of Raw: %v", err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Fatalf("re-parse differs (-first +again):\n%s", diff)
		}
	})
}
