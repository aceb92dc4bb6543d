package connect

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// OutboundTokenLifetime is the validity of tokens the app sends to products:
// 180 s, as atlassian-connect-express (3 minutes) and the Connect docs use.
const OutboundTokenLifetime = 180 * time.Second

// outboundHeader is the base64url of {"typ":"JWT","alg":"HS256"} in exactly
// that key order, so tokens are byte-identical to atlassian-jwt's.
var outboundHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256"}`))

// outboundClaims marshals in the key order of atlassian-connect-express
// (iss, iat, exp, qsh); order does not matter to verifiers but makes tokens
// reproducible byte for byte.
type outboundClaims struct {
	Issuer    string `json:"iss"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	QSH       string `json:"qsh"`
}

// NewOutboundToken returns the JWT for an app-to-product request (docs/protocol.md#outbound-requests): HS256 with the tenant's shared secret, header {"typ":"JWT","alg":"HS256"},
// iss = appKey, iat = now, exp = now + 180 s, and the qsh of method and u
// relative to the path of productBaseURL (so Confluence's "/wiki" is not
// hashed). u must be an absolute URL on productBaseURL's scheme and host and
// under its path: a token is never minted for another host.
func NewOutboundToken(method string, u *url.URL, productBaseURL, appKey string, secret []byte, now time.Time) (string, error) {
	if appKey == "" {
		return "", errors.New("connect: outbound token: empty app key")
	}
	if len(secret) == 0 {
		return "", errors.New("connect: outbound token: empty shared secret")
	}
	if method == "" {
		return "", errors.New("connect: outbound token: empty method")
	}
	if u == nil {
		return "", errors.New("connect: outbound token: nil URL")
	}
	base, err := url.Parse(productBaseURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return "", fmt.Errorf("connect: outbound token: product base URL %q is not absolute", truncate(productBaseURL, 256))
	}
	basePath := strings.TrimSuffix(basePathOf(base), "/")
	switch {
	case !strings.EqualFold(u.Scheme, base.Scheme) || !strings.EqualFold(u.Host, base.Host):
		return "", fmt.Errorf("connect: outbound token: %s://%s is not the product %s://%s",
			u.Scheme, truncate(u.Host, 256), base.Scheme, truncate(base.Host, 256))
	case !isUnderPath(u.EscapedPath(), basePath):
		return "", fmt.Errorf("connect: outbound token: path %q is not under the product base path %q",
			truncate(u.EscapedPath(), 256), basePath)
	}

	payload, err := json.Marshal(outboundClaims{
		Issuer:    appKey,
		IssuedAt:  now.Unix(),
		ExpiresAt: now.Add(OutboundTokenLifetime).Unix(),
		QSH:       QSH(method, u, basePath),
	})
	if err != nil {
		return "", fmt.Errorf("connect: outbound token: %w", err)
	}
	signing := outboundHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
	if err != nil {
		return "", fmt.Errorf("connect: outbound token: sign: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// isUnderPath reports whether path is basePath or below it, on a segment
// boundary.
func isUnderPath(path, basePath string) bool {
	if basePath == "" {
		return true
	}
	return path == basePath || strings.HasPrefix(path, basePath+"/")
}

// SignRequest sets "Authorization: JWT <token>" on an outbound request to a
// product, with the token of NewOutboundToken for req's method and URL.
func SignRequest(req *http.Request, productBaseURL, appKey string, secret []byte, now time.Time) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet // net/http's meaning of an empty method
	}
	tok, err := NewOutboundToken(method, req.URL, productBaseURL, appKey, secret, now)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "JWT "+tok)
	return nil
}
