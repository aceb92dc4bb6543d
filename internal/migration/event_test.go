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

// The illustrative composite of docs/protocol.md#app-migration-platform-connect, with an upload's fields.
const docExample = `{"eventType":"app-data-uploaded","cloudAppKey":"my-app","transferId":"2e170ff3-1a8b-4b1c-9f0e-5b1f6f0f2c1a",
"messageId":"6b0a1c2e-0000-4000-8000-000000000001","s3Key":"a1b2c3/data.json","label":"final",
"migrationDetails":{"migrationId":"fd2b0ea1-0000-4000-8000-000000000000","migrationScopeId":"0bba5d1d-0000-4000-8000-000000000000",
"name":"My test migration","createdAt":1702530783417,"jiraClientKey":"fbc7b56e-0000-4000-8000-000000000000",
"confluenceClientKey":"847e2ce1-0000-4000-8000-000000000000","cloudUrl":"https://example.atlassian.net"}}`

func TestParseEvent(t *testing.T) {
	t.Parallel()
	ignoreRaw := cmpopts.IgnoreFields(migration.Event{}, "Raw")
	ignoreDetailsRaw := cmpopts.IgnoreFields(connectrelay.MigrationDetails{}, "Raw")
	tests := []struct {
		desc string
		body string
		want migration.Event
	}{
		{
			desc: "documented upload with messageId",
			body: docExample,
			want: migration.Event{
				Type: migration.EventAppDataUploaded, TransferID: "2e170ff3-1a8b-4b1c-9f0e-5b1f6f0f2c1a",
				MessageID: "6b0a1c2e-0000-4000-8000-000000000001", CloudAppKey: "my-app",
				S3Key: "a1b2c3/data.json", Label: "final",
				Details: connectrelay.MigrationDetails{
					MigrationID: "fd2b0ea1-0000-4000-8000-000000000000", MigrationScopeID: "0bba5d1d-0000-4000-8000-000000000000",
					Name: "My test migration", CreatedAt: 1702530783417,
					JiraClientKey: "fbc7b56e-0000-4000-8000-000000000000", ConfluenceClientKey: "847e2ce1-0000-4000-8000-000000000000",
					CloudURL: "https://example.atlassian.net",
				},
			},
		},
		{
			desc: "listener-triggered without messageId",
			body: `{"eventType":"listener-triggered","transferId":"t1","migrationDetails":{}}`,
			want: migration.Event{Type: migration.EventListenerTriggered, TransferID: "t1"},
		},
		{
			desc: "upload key under the alternative name key, no label",
			body: `{"eventType":"app-data-uploaded","transferId":"t1","key":"k1","migrationDetails":{}}`,
			want: migration.Event{Type: migration.EventAppDataUploaded, TransferID: "t1", S3Key: "k1"},
		},
		{
			desc: "s3Key wins over key",
			body: `{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"a","key":"b","migrationDetails":{}}`,
			want: migration.Event{Type: migration.EventAppDataUploaded, TransferID: "t1", S3Key: "a"},
		},
		{
			desc: "unknown type and fields, null messageId, liberal details",
			body: `{"eventType":"transfer-paused","transferId":"t1","messageId":null,"future":[1,2],
				"migrationDetails":{"migrationId":7,"createdAt":"yesterday","jiraClientKey":"ck\u0000","cloudUrl":null}}`,
			want: migration.Event{Type: "transfer-paused", TransferID: "t1"},
		},
		{
			desc: "s3Key is only read for uploads",
			body: `{"eventType":"listener-errored","transferId":"t1","s3Key":"k","migrationDetails":{"name":"x"}}`,
			want: migration.Event{Type: migration.EventListenerErrored, TransferID: "t1",
				Details: connectrelay.MigrationDetails{Name: "x"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := migration.ParseEvent([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, ignoreRaw, ignoreDetailsRaw); diff != "" {
				t.Errorf("ParseEvent (-want +got):\n%s", diff)
			}
			if string(got.Raw) != tc.body {
				t.Errorf("Raw = %s, want the body as received", got.Raw)
			}
			if !json.Valid(got.Details.Raw) {
				t.Errorf("Details.Raw = %s, not JSON", got.Details.Raw)
			}
		})
	}
}

func TestParseEventRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ desc, body string }{
		{"empty", ``},
		{"not JSON", `eventType=listener-triggered`},
		{"array", `[{"eventType":"listener-triggered"}]`},
		{"null", `null`},
		{"string", `"x"`},
		{"trailing data", `{"eventType":"listener-triggered","transferId":"t","migrationDetails":{}} {}`},
		{"missing eventType", `{"transferId":"t","migrationDetails":{}}`},
		{"empty eventType", `{"eventType":"","transferId":"t","migrationDetails":{}}`},
		{"eventType not a string", `{"eventType":1,"transferId":"t","migrationDetails":{}}`},
		{"missing transferId", `{"eventType":"listener-triggered","migrationDetails":{}}`},
		{"transferId null", `{"eventType":"listener-triggered","transferId":null,"migrationDetails":{}}`},
		{"transferId number", `{"eventType":"listener-triggered","transferId":12,"migrationDetails":{}}`},
		{"missing migrationDetails", `{"eventType":"listener-triggered","transferId":"t"}`},
		{"migrationDetails not an object", `{"eventType":"listener-triggered","transferId":"t","migrationDetails":"x"}`},
		{"migrationDetails null", `{"eventType":"listener-triggered","transferId":"t","migrationDetails":null}`},
		{"upload without key", `{"eventType":"app-data-uploaded","transferId":"t","label":"x","migrationDetails":{}}`},
		{"upload with empty keys", `{"eventType":"app-data-uploaded","transferId":"t","s3Key":"","key":"","migrationDetails":{}}`},
		{"upload label not a string", `{"eventType":"app-data-uploaded","transferId":"t","s3Key":"k","label":5,"migrationDetails":{}}`},
		{"messageId not a string", `{"eventType":"listener-triggered","transferId":"t","messageId":{},"migrationDetails":{}}`},
		{"NUL in transferId", `{"eventType":"listener-triggered","transferId":"t\u0000","migrationDetails":{}}`},
		{"newline in s3Key", `{"eventType":"app-data-uploaded","transferId":"t","s3Key":"a\nb","migrationDetails":{}}`},
		{"invalid UTF-8", "{\"eventType\":\"listener-triggered\",\"transferId\":\"t\xff\",\"migrationDetails\":{}}"},
		{"transferId too long", `{"eventType":"listener-triggered","transferId":"` + strings.Repeat("a", 2049) + `","migrationDetails":{}}`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ev, err := migration.ParseEvent([]byte(tc.body))
			if !errors.Is(err, migration.ErrInvalidEvent) {
				t.Fatalf("ParseEvent = %+v, %v; want ErrInvalidEvent", ev, err)
			}
		})
	}
}

func TestDedupeKey(t *testing.T) {
	t.Parallel()
	parse := func(body string) migration.Event {
		t.Helper()
		ev, err := migration.ParseEvent([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	withID := parse(docExample)
	if got, want := withID.DedupeKey(), "msg:6b0a1c2e-0000-4000-8000-000000000001"; got != want {
		t.Errorf("DedupeKey with messageId = %q, want %q", got, want)
	}

	base := `{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"ab","label":"c","migrationDetails":{"migrationId":"m1"}}`
	k := parse(base).DedupeKey()
	if !strings.HasPrefix(k, "content:") || len(k) != len("content:")+64 {
		t.Fatalf("content key %q: want content: + 64 hex digits", k)
	}
	same := []string{
		// Field order, whitespace, unused fields and details other than migrationId do not matter.
		`{"label":"c","s3Key":"ab","transferId":"t1","eventType":"app-data-uploaded","cloudAppKey":"x","migrationDetails":{"migrationId":"m1","name":"n"}}`,
		`{ "eventType" : "app-data-uploaded", "transferId":"t1","s3Key":"ab","label":"c","migrationDetails":{"migrationId":"m1"}, "messageId": null}`,
		// The alternative key name is the same upload.
		`{"eventType":"app-data-uploaded","transferId":"t1","key":"ab","label":"c","migrationDetails":{"migrationId":"m1"}}`,
	}
	for _, b := range same {
		if got := parse(b).DedupeKey(); got != k {
			t.Errorf("DedupeKey(%s) = %s, want %s", b, got, k)
		}
	}
	different := []string{
		`{"eventType":"app-data-uploaded","transferId":"t2","s3Key":"ab","label":"c","migrationDetails":{"migrationId":"m1"}}`,
		`{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"ab","label":"d","migrationDetails":{"migrationId":"m1"}}`,
		`{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"ab","label":"c","migrationDetails":{"migrationId":"m2"}}`,
		`{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"ab","migrationDetails":{"migrationId":"m1"}}`,
		// Same concatenation "abc", different split: length prefixes tell them apart.
		`{"eventType":"app-data-uploaded","transferId":"t1","s3Key":"a","label":"bc","migrationDetails":{"migrationId":"m1"}}`,
		`{"eventType":"listener-triggered","transferId":"t1","migrationDetails":{"migrationId":"m1"}}`,
	}
	seen := map[string]string{k: base}
	for _, b := range different {
		got := parse(b).DedupeKey()
		if prev, dup := seen[got]; dup {
			t.Errorf("DedupeKey(%s) = DedupeKey(%s) = %s", b, prev, got)
		}
		seen[got] = b
	}
}

func TestClientKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		details string
		want    []string
	}{
		{"both", `{"jiraClientKey":"j","confluenceClientKey":"c"}`, []string{"j", "c"}},
		{"unknown and empty dropped", `{"jiraClientKey":"unknown","confluenceClientKey":""}`, nil},
		{"confluence only", `{"jiraClientKey":"unknown","confluenceClientKey":"c"}`, []string{"c"}},
		{"same key twice", `{"jiraClientKey":"k","confluenceClientKey":"k"}`, []string{"k"}},
		{"not strings", `{"jiraClientKey":1,"confluenceClientKey":["c"]}`, nil},
		{"absent", `{}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ev, err := migration.ParseEvent([]byte(`{"eventType":"listener-triggered","transferId":"t","migrationDetails":` + tc.details + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ev.ClientKeys()); diff != "" {
				t.Errorf("ClientKeys (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		docExample,
		`{"eventType":"listener-triggered","transferId":"t1","migrationDetails":{}}`,
		`{"eventType":"app-data-uploaded","transferId":"t1","key":"k1","label":"final","migrationDetails":{"jiraClientKey":"j"}}`,
		`{"eventType":"transfer-cancellation-requested","transferId":"t","messageId":"m","migrationDetails":{"confluenceClientKey":"c"}}`,
		`{"eventType":"listener-errored","transferId":"t","migrationDetails":{"createdAt":1.5e3}}`,
		`{"eventType":"x","transferId":"t","migrationDetails":{"migrationId":"\ud800"}}`,
		`{"eventType":"app-data-uploaded","transferId":"t","s3Key":"\u0000","migrationDetails":{}}`,
		`null`, `[]`, `{}`, `{"eventType":1}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := migration.ParseEvent(body)
		if err != nil {
			if !errors.Is(err, migration.ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if ev.Type == "" || ev.TransferID == "" {
			t.Fatalf("accepted event without type or transfer: %+v", ev)
		}
		if ev.Type == migration.EventAppDataUploaded && ev.S3Key == "" {
			t.Fatalf("accepted upload without s3Key: %+v", ev)
		}
		if !json.Valid(ev.Raw) || !json.Valid(ev.Details.Raw) {
			t.Fatalf("raw parts are not JSON: %q / %q", ev.Raw, ev.Details.Raw)
		}
		// Everything that becomes Postgres text or a Redis key must be storable.
		for _, s := range []string{string(ev.Type), ev.TransferID, ev.MessageID, ev.S3Key, ev.Label,
			ev.CloudAppKey, ev.Details.MigrationID, ev.Details.JiraClientKey, ev.Details.ConfluenceClientKey} {
			if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 || len(s) > 2048 {
				t.Fatalf("unstorable field %q in %+v", s, ev)
			}
		}
		k := ev.DedupeKey()
		if !strings.HasPrefix(k, "msg:") && !strings.HasPrefix(k, "content:") {
			t.Fatalf("DedupeKey %q", k)
		}
		for _, ck := range ev.ClientKeys() {
			if ck == "" || ck == "unknown" {
				t.Fatalf("ClientKeys returned %q", ck)
			}
		}
		// Parsing is a function of the body: the recorded Raw parses to the same event.
		again, err := migration.ParseEvent(ev.Raw)
		if err != nil {
			t.Fatalf("re-parse of Raw: %v", err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Fatalf("re-parse differs (-first +again):\n%s", diff)
		}
		if again.DedupeKey() != k {
			t.Fatalf("DedupeKey not deterministic")
		}
	})
}
