package tasks

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Redacted replaces every value RedactPayload hides.
const Redacted = "[REDACTED]"

// secretKeyWords are substrings of JSON field names whose values are never shown.
// Our own payloads carry no secret by construction; this is the second line of
// defence for vendor task types and for mistakes.
var secretKeyWords = []string{"secret", "token", "password", "passwd", "jwt", "authorization", "credential", "privatekey", "private_key", "apikey", "api_key", "cookie", "signature"}

// jwtLike matches a compact JWS anywhere in a string value.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)

// RedactPayload renders a task payload for the monitoring UI with anything
// secret-looking replaced by [REDACTED]: values of fields whose names look secret,
// and JWT-shaped strings wherever they appear. Payloads that are not JSON are not
// shown at all, since they cannot be inspected.
func RedactPayload(taskType string, payload []byte) string {
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return fmt.Sprintf("[%d-byte non-JSON payload hidden]", len(payload))
	}
	out, err := json.MarshalIndent(redact(v), "", "  ")
	if err != nil {
		return fmt.Sprintf("[%d-byte payload hidden]", len(payload))
	}
	return string(out)
}

func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if secretName(k) {
				t[k] = Redacted
				continue
			}
			t[k] = redact(val)
		}
		return t
	case []any:
		for i := range t {
			t[i] = redact(t[i])
		}
		return t
	case string:
		return jwtLike.ReplaceAllString(t, Redacted)
	default:
		return v
	}
}

func secretName(k string) bool {
	l := strings.ToLower(k)
	for _, w := range secretKeyWords {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}
