package connect

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecodeMembers checks that decodeMembers, which walks valid JSON
// itself, decides as its json.Decoder version does.
func FuzzDecodeMembers(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"iss":"a", "exp": 1 } `, `{"iss":"a","iss":"b"}`, `{"iss":"a","i\u0073s":"b"}`,
		`{"a":{"iss":1,"iss":2}}`, `[]`, `null`, `"x"`, `{"a":1} {}`, `{"a":[1,"]"]}`, "{\"\xff\":1,\"\xfe\":2}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, wantErr := decodeMembersStream(b)
		got, err := decodeMembers(b)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("decodeMembers(%q) error %v, stream %v", b, err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("decodeMembers(%q) (-stream +got):\n%s", b, diff)
		}
	})
}
