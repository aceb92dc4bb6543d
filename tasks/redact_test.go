package tasks

import (
	"strings"
	"testing"
)

func TestRedactPayload_HidesSecretLookingValues(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
	tests := []struct {
		name    string
		payload string
		hidden  []string
		shown   []string
	}{
		{"shared secret field", `{"clientKey":"ck-1","sharedSecret":"s3cr3t-value"}`, []string{"s3cr3t-value"}, []string{"ck-1"}},
		{"nested token", `{"a":{"b":[{"accessToken":"tok-123"}]}}`, []string{"tok-123"}, nil},
		{"jwt inside a string", `{"note":"Authorization JWT ` + jwt + ` sent"}`, []string{jwt}, []string{"sent"}},
		{"password and api key", `{"Password":"p1","api_key":"k1","s3Key":"upload-1"}`, []string{"p1", "k1"}, []string{"upload-1"}},
		{"identifiers kept", `{"clientKey":"ck","eventId":7,"transferId":"tr-1"}`, nil, []string{"ck", "7", "tr-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RedactPayload("any", []byte(tt.payload))
			for _, h := range tt.hidden {
				if strings.Contains(got, h) {
					t.Errorf("RedactPayload(%s) = %s, still shows %q", tt.payload, got, h)
				}
			}
			for _, s := range tt.shown {
				if !strings.Contains(got, s) {
					t.Errorf("RedactPayload(%s) = %s, lost %q", tt.payload, got, s)
				}
			}
		})
	}
}

func TestRedactPayload_HidesNonJSON(t *testing.T) {
	got := RedactPayload("any", []byte("sharedSecret=abc"))
	if strings.Contains(got, "abc") {
		t.Fatalf("non-JSON payload shown: %s", got)
	}
}
