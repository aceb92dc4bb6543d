package forge

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// This file holds the Forge event wire shapes, so that a detail Atlassian's
// documentation leaves open is corrected in one place. Open points:
//
//   - the envelope of an event delivered to a remote: Atlassian's retry
//     example wraps it as {"payload": {...}}, its remote guide reads it at
//     the top level; Unwrap accepts both;
//   - eventType may be missing from lifecycle bodies;
//   - the body id is the installation UUID, the token's installationId the
//     ARI of it: equality of the two is likely, not documented, so body
//     identity is only compared (LifecycleEvent.Mismatches), never trusted.

// Lifecycle event types (https://developer.atlassian.com/platform/forge/events-reference/life-cycle/).
const (
	// EventInstalled is sent when the app is installed on a site.
	EventInstalled = "avi:forge:installed:app"
	// EventUpgraded is sent on a major version upgrade only.
	EventUpgraded = "avi:forge:upgraded:app"
	// EventUninstalled is not documented (FRGE-1246); it is tolerated if it
	// ever arrives.
	EventUninstalled = "avi:forge:uninstalled:app"
)

// MaxBody is the largest delivery body Unwrap reads.
const MaxBody = 1 << 20

// RetryContext is what Forge adds to a re-sent delivery.
type RetryContext struct {
	RetryCount  int    `json:"retryCount"`
	RetryReason string `json:"retryReason"`
}

// Unwrap returns the event object of a delivery body: the body itself, or its
// "payload" member when the body is {"payload": {...}} without an eventType
// or id of its own, with the retryContext found at either level. Errors wrap
// ErrBody.
func Unwrap(body []byte) (json.RawMessage, RetryContext, error) {
	if len(body) > MaxBody {
		return nil, RetryContext{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrBody, len(body), MaxBody)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, RetryContext{}, fmt.Errorf("%w: not a JSON object", ErrBody)
	}
	event := json.RawMessage(body)
	fields := top
	if p, ok := top["payload"]; ok && top["eventType"] == nil && top["id"] == nil {
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(p, &inner); err != nil || inner == nil {
			return nil, RetryContext{}, fmt.Errorf("%w: payload is not a JSON object", ErrBody)
		}
		event, fields = bytes.TrimSpace(p), inner
	}
	var rc RetryContext
	for _, m := range []map[string]json.RawMessage{fields, top} {
		if raw, ok := m["retryContext"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			if err := json.Unmarshal(raw, &rc); err != nil {
				return nil, RetryContext{}, fmt.Errorf("%w: retryContext: %v", ErrBody, err)
			}
			break
		}
	}
	return event, rc, nil
}

// LifecycleEvent is a lifecycle event body as documented; every field may be
// missing.
type LifecycleEvent struct {
	EventType string `json:"eventType"`
	// ID is the installation id (UUID form in the documented example).
	ID string `json:"id"`
	// Context is the site ARI, ari:cloud:<product>::site/<cloudId>.
	Context string `json:"context"`
	App     struct {
		ID      string `json:"id"`
		Version string `json:"version"`
		Name    string `json:"name"`
	} `json:"app"`
	Environment struct {
		ID string `json:"id"`
	} `json:"environment"`
	InstallerAccountID string `json:"installerAccountId"`
	UpgraderAccountID  string `json:"upgraderAccountId"`
}

// ParseLifecycle decodes a lifecycle event object leniently (unknown members
// ignored). Errors wrap ErrBody.
func ParseLifecycle(event json.RawMessage) (LifecycleEvent, error) {
	var e LifecycleEvent
	if err := json.Unmarshal(event, &e); err != nil {
		return LifecycleEvent{}, fmt.Errorf("%w: lifecycle event: %v", ErrBody, err)
	}
	return e, nil
}

// Mismatches compares the body's identity with the verified claims and
// describes every difference, for logging: installation id (UUID or ARI
// form), site cloudId and app id. It is never a reason to trust or refuse.
func (e LifecycleEvent) Mismatches(c *Claims) []string {
	var out []string
	if e.ID != "" && e.ID != c.App.InstallationID && e.ID != c.InstallationUUID() {
		out = append(out, fmt.Sprintf("body id %.80q is not the token's installation %s", e.ID, c.App.InstallationID))
	}
	if e.Context != "" {
		if cloud := suffixAfter(e.Context, "/"); cloud != c.CloudID() {
			out = append(out, fmt.Sprintf("body context %.120q is not the token's cloudId %s", e.Context, c.CloudID()))
		}
	}
	if e.App.ID != "" && e.App.ID != c.App.ID && AppARIPrefix+e.App.ID != c.App.ID {
		out = append(out, fmt.Sprintf("body app.id %.80q is not the token's app %s", e.App.ID, c.App.ID))
	}
	return out
}

func suffixAfter(s, sep string) string {
	if i := bytes.LastIndex([]byte(s), []byte(sep)); i >= 0 {
		return s[i+len(sep):]
	}
	return s
}

// LifecycleDedupeKey identifies a lifecycle delivery across Forge's retries,
// which carry a new token (new jti) each time: the hex SHA-256 of a
// length-prefixed encoding of the verified installation, the event type (the
// body's, EventInstalled when it has none), the app version and the
// environment. Two different events never share a key by concatenation.
func LifecycleDedupeKey(c *Claims, eventType string) string {
	if eventType == "" {
		eventType = EventInstalled
	}
	h := sha256.New()
	var n [8]byte
	for _, f := range []string{c.App.InstallationID, eventType, c.App.AppVersion, c.App.Environment.ID} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}
