package tasks

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzMigrationEventPayload checks that the payload of migration:event is
// json.Marshal's, byte for byte, with its error when there is one.
func FuzzMigrationEventPayload(f *testing.F) {
	f.Add("ck-1", []byte(`{"eventType":"listener-triggered","transferId":"t","migrationDetails":{}}`))
	f.Add("ck-1", []byte(`{"a": "b <&> \u2028"}`))
	f.Add("ck-1", []byte("{\"a\":\"\u2028\"}"))
	f.Add("ck\"<1>&", []byte(`{}`))
	f.Add("ck\xff\x7f", []byte(`{"a":"\xff"}`))
	f.Add("ari:cloud:ecosystem::installation/1", []byte(`[1,2]`))
	f.Add("ck", []byte(``))
	f.Add("ck", []byte(`{`))
	f.Add("ck", []byte(nil))
	f.Fuzz(func(t *testing.T, clientKey string, body []byte) {
		want, wantErr := json.Marshal(migrationEventPayload{ClientKey: clientKey, Event: body})
		got, err := migrationEventPayloadJSON(clientKey, body)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("error %v, json.Marshal %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("payload %q, json.Marshal %q", got, want)
		}
	})
}
