package migration

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// jsonscanSeeds are inputs where a hand-written walker could part from
// encoding/json: escapes in names and values, duplicate names, nesting,
// whitespace, invalid UTF-8 and non-objects.
var jsonscanSeeds = []string{
	`{}`, ` { } `, `null`, ` null `, `[]`, `"x"`, `1`, `{`, `{"a":1,}`, `{"a":1} x`, "\xff", ``,
	`{"a":1,"a":2}`, `{"a":{"b":[1,{"c":"}"}]},"d":"\"]"}`, "{\n\t\"a\" :\r \"b\" , \"c\":[ ] }",
	`{"event\u0054ype":"x","eventType":"y"}`, `{"eventType":"y","event\u0054ype":"x"}`,
	`{"a":"\ud800","b":"\u00e9","c":"é","d":"\\","e":"a\/b"}`, "{\"a\":\"\xff\"}", "{\"\xff\":1}",
	`{"a":true,"b":false,"c":null,"d":-1.5e+3,"e":0}`, `{"":""}`, `{"a":"\u0000"}`,
}

func FuzzObjectMembers(f *testing.F) {
	for _, s := range jsonscanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(b, &want)
		got, gotErr := objectMembers(b)
		if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
			t.Fatalf("objectMembers(%q) error %v, json.Unmarshal %v", b, gotErr, wantErr)
		}
		if (want == nil) != (got == nil) {
			t.Fatalf("objectMembers(%q) = %v, json.Unmarshal %v", b, got, want)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("objectMembers(%q) (-json.Unmarshal +got):\n%s", b, diff)
		}
		for name, v := range got {
			var s string
			wantOK := json.Unmarshal(v, &s) == nil
			gs, ok := decodeString(v)
			if ok != wantOK || ok && gs != s {
				t.Fatalf("decodeString(%q) of %q = %q, %v; json.Unmarshal %q, %v", v, name, gs, ok, s, wantOK)
			}
		}
	})
}

func TestObjectMembersSeeds(t *testing.T) {
	t.Parallel()
	m, err := objectMembers([]byte(`{"event\u0054ype":"x","a":{"b":[1,"]"]}, "a" : 2 }`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]json.RawMessage{"eventType": json.RawMessage(`"x"`), "a": json.RawMessage(`2`)}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("objectMembers (-want +got):\n%s", diff)
	}
}
