package webhook

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary headers and bodies to Verify: it must never panic,
// and must accept only what the secret signed.
func FuzzVerify(f *testing.F) {
	s, err := ParseSecret("whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	signedBody := []byte(`{"type":"tenant.installed"}`)
	good := s.Sign("evt_1", now, signedBody)
	f.Add("evt_1", "1800000000", good, signedBody)
	f.Add("evt_1", "1800000000", "v1,"+good[3:]+" v1,"+good[3:], signedBody)
	f.Add("evt_1", "+1800000000", good, signedBody)
	f.Add("evt_1", "1800000000", "v1,", []byte{})
	f.Add("", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		got, err := s.Verify(h, body, now, 0)
		if err != nil {
			return
		}
		if got != h.Get(HeaderID) {
			t.Fatalf("accepted id %q, header says %q", got, h.Get(HeaderID))
		}
		// An accepted delivery must be the one signed above, or a signature the
		// fuzzer computed itself, which it cannot: so only the seed's.
		if h.Get(HeaderID) != "evt_1" || !bytes.Equal(body, signedBody) {
			t.Fatalf("accepted id %q ts %q body %q", id, ts, body)
		}
	})
}
