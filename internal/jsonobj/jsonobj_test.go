package jsonobj

import (
	"encoding/json"
	"errors"
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

func FuzzMembers(f *testing.F) {
	for _, s := range jsonscanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(b, &want)
		got, gotErr := Members(b)
		if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
			t.Fatalf("Members(%q) error %v, json.Unmarshal %v", b, gotErr, wantErr)
		}
		if (want == nil) != (got == nil) {
			t.Fatalf("Members(%q) = %v, json.Unmarshal %v", b, got, want)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Members(%q) (-json.Unmarshal +got):\n%s", b, diff)
		}
		for name, v := range got {
			var s string
			wantOK := json.Unmarshal(v, &s) == nil
			gs, ok := String(v)
			if ok != wantOK || ok && gs != s {
				t.Fatalf("String(%q) of %q = %q, %v; json.Unmarshal %q, %v", v, name, gs, ok, s, wantOK)
			}
		}
	})
}

func TestMembers_ReadsEscapedNamesAndKeepsTheLastValue(t *testing.T) {
	t.Parallel()
	m, err := Members([]byte(`{"event\u0054ype":"x","a":{"b":[1,"]"]}, "a" : 2 }`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]json.RawMessage{"eventType": json.RawMessage(`"x"`), "a": json.RawMessage(`2`)}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("objectMembers (-want +got):\n%s", diff)
	}
}

func TestUnique_RefusesARepeatedNameAndWhatIsNotAnObject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[string]json.RawMessage
		dupName string // a *DuplicateError naming it
		notObj  bool
	}{
		{in: ` {"a":1, "b" : [1,{"a":2}] } `, want: map[string]json.RawMessage{"a": json.RawMessage(`1`), "b": json.RawMessage(`[1,{"a":2}]`)}},
		{in: `{}`, want: map[string]json.RawMessage{}},
		{in: `{"a":1,"a":2}`, dupName: "a"},
		{in: `{"a":1,"\u0061":2}`, dupName: "a"},
		{in: `{"":0,"":0}`, dupName: ""},
		{in: `null`, notObj: true},
		{in: `[{"a":1}]`, notObj: true},
	}
	for _, tc := range tests {
		got, err := Unique([]byte(tc.in))
		var dup *DuplicateError
		switch {
		case tc.notObj:
			if !errors.Is(err, ErrNotObject) {
				t.Errorf("Unique(%s) = %v, want ErrNotObject", tc.in, err)
			}
		case tc.want == nil:
			if !errors.As(err, &dup) || dup.Name != tc.dupName {
				t.Errorf("Unique(%s) = %v, want a DuplicateError naming %q", tc.in, err, tc.dupName)
			}
		case err != nil:
			t.Errorf("Unique(%s) = %v", tc.in, err)
		default:
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Unique(%s) (-want +got):\n%s", tc.in, diff)
			}
		}
	}
}
