package webhook

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

type fixture struct {
	Secret    string `json:"secret"`
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	Body      string `json:"body"`
	Signature string `json:"signature"`
}

func loadFixtures(t *testing.T) []fixture {
	t.Helper()
	b, err := os.ReadFile("../../testdata/standardwebhooks/fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Generator string    `json:"generator"`
		Cases     []fixture `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.Generator, "standardwebhooks@") || len(f.Cases) < 10 {
		t.Fatalf("fixtures from %q with %d cases: not the reference library's", f.Generator, len(f.Cases))
	}
	return f.Cases
}

func TestSign_MatchesTheReferenceLibrary(t *testing.T) {
	for _, c := range loadFixtures(t) {
		s, err := ParseSecret(c.Secret)
		if err != nil {
			t.Fatalf("%s: %v", c.ID, err)
		}
		if got := s.Sign(c.ID, time.Unix(c.Timestamp, 0), []byte(c.Body)); got != c.Signature {
			t.Errorf("id %q ts %d body %.30q: signed %s, standardwebhooks signed %s", c.ID, c.Timestamp, c.Body, got, c.Signature)
		}
	}
}

func TestVerify_AcceptsTheReferenceLibrarysSignatures(t *testing.T) {
	for _, c := range loadFixtures(t) {
		s, _ := ParseSecret(c.Secret)
		h := http.Header{}
		h.Set(HeaderID, c.ID)
		h.Set(HeaderTimestamp, fmt.Sprint(c.Timestamp))
		// A receiver may see several signatures (key rotation): ours is found
		// among them.
		h.Set(HeaderSignature, "v2,ignored v1,AAAA "+c.Signature)
		id, err := s.Verify(h, []byte(c.Body), time.Unix(c.Timestamp+30, 0), 0)
		if err != nil || id != c.ID {
			t.Errorf("id %q: Verify = %q, %v", c.ID, id, err)
		}
		if _, err := s.Verify(h, []byte(c.Body+"x"), time.Unix(c.Timestamp, 0), 0); !errors.Is(err, ErrSignature) {
			t.Errorf("id %q: tampered body: %v, want ErrSignature", c.ID, err)
		}
	}
}

func TestVerify_Refusals(t *testing.T) {
	s, err := ParseSecret("whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ParseSecret("whsec_" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")))
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"type":"tenant.installed"}`)
	signed := func(sec Secret, id string, ts time.Time) http.Header {
		h := http.Header{}
		sec.SetHeaders(h, id, ts, body)
		return h
	}
	tests := []struct {
		name   string
		header http.Header
		want   error
	}{
		{"missing headers", http.Header{}, ErrMissingHeaders},
		{"no signature", func() http.Header { h := signed(s, "evt_1", now); h.Del(HeaderSignature); return h }(), ErrMissingHeaders},
		{"other secret", signed(other, "evt_1", now), ErrSignature},
		{"too old", signed(s, "evt_1", now.Add(-6*time.Minute)), ErrTimestamp},
		{"too new", signed(s, "evt_1", now.Add(6*time.Minute)), ErrTimestamp},
		{"timestamp not a number", func() http.Header { h := signed(s, "evt_1", now); h.Set(HeaderTimestamp, "1e9"); return h }(), ErrTimestamp},
		{"id changed", func() http.Header { h := signed(s, "evt_1", now); h.Set(HeaderID, "evt_2"); return h }(), ErrSignature},
		{"only a v2 signature", func() http.Header {
			h := signed(s, "evt_1", now)
			h.Set(HeaderSignature, "v2,"+strings.TrimPrefix(h.Get(HeaderSignature), "v1,"))
			return h
		}(), ErrSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Verify(tc.header, body, now, 0); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	if id, err := s.Verify(signed(s, "evt_1", now.Add(-4*time.Minute)), body, now, 0); err != nil || id != "evt_1" {
		t.Fatalf("within tolerance: %q, %v", id, err)
	}
}

func TestParseSecret(t *testing.T) {
	b := func(n int) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", n))) }
	tests := []struct {
		in string
		ok bool
	}{
		{"whsec_" + b(24), true},
		{"whsec_" + b(32), true},
		{"whsec_" + b(64), true},
		{"whsec_" + b(23), false},
		{"whsec_" + b(65), false},
		{b(32), false},
		{"whsec_" + strings.TrimRight(b(32), "="), false}, // unpadded
		{"whsec_" + base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))), false},
		{"whsec_", false},
		{"", false},
	}
	for _, tc := range tests {
		_, err := ParseSecret(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSecret(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil {
			if !errors.Is(err, ErrSecret) {
				t.Errorf("ParseSecret(%q): %v does not wrap ErrSecret", tc.in, err)
			}
			if len(tc.in) > 10 && strings.Contains(err.Error(), tc.in[6:]) {
				t.Errorf("error %q repeats the secret", err)
			}
		}
	}
}

func TestSecret_NeverPrintsItsKey(t *testing.T) {
	raw := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	s, _ := ParseSecret(raw)
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", slog.Any("secret", s))
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), logged.String()} {
		if strings.Contains(out, raw[6:]) || strings.Contains(out, "0123456789abcdef") {
			t.Fatalf("printed the key: %s", out)
		}
	}
}
