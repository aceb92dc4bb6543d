package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// MonitoringBodyLimit bounds a request body sent to /monitoring. The asynq UI
// sends small JSON bodies (a batch of task ids at most); 1 MiB is far above
// that and keeps a client from making the receiver buffer much.
const MonitoringBodyLimit = 1 << 20

// requireAdmin guards operator routes with ADMIN_TOKEN, given as a bearer token
// or as the password of HTTP basic auth (so a browser can open the UI). Both sides
// are hashed before the constant-time compare, so neither the token's content nor
// its length leaks through timing.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(s.d.Config.AdminToken))
	return func(c echo.Context) error {
		got, ok := adminCredential(c.Request())
		if ok {
			h := sha256.Sum256([]byte(got))
			if subtle.ConstantTimeCompare(h[:], want[:]) == 1 {
				c.Response().Header().Set("Cache-Control", "no-store")
				return next(c)
			}
		}
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="connectrelay monitoring"`)
		return c.JSON(http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
	}
}

func adminCredential(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw, true
	}
	return "", false
}

// browserGuard protects the monitoring UI from other sites: a browser that has
// cached the operator's basic credentials sends them with any request, including
// a form another site posts. It runs before requireAdmin and
//   - refuses (403) every request but GET and HEAD that a browser marks as coming
//     from another origin (see crossOrigin);
//   - forbids framing the UI (clickjacking);
//   - bounds request bodies to MonitoringBodyLimit.
//
// Requests without Sec-Fetch-Site and Origin (curl, scripts with the token) are
// not a browser's and pass.
func (s *Server) browserGuard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		h := c.Response().Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		if r.Method != http.MethodGet && r.Method != http.MethodHead && crossOrigin(r) {
			return fail(http.StatusForbidden, "cross-site request refused: /monitoring accepts changes only from its own pages", nil)
		}
		if r.ContentLength > MonitoringBodyLimit {
			return fail(http.StatusRequestEntityTooLarge, "body too large", nil)
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(c.Response(), r.Body, MonitoringBodyLimit)
		}
		return next(c)
	}
}

// crossOrigin reports whether a browser says r comes from a page of another
// origin. Sec-Fetch-Site decides when present (every current browser sends it):
// only same-origin and none (typed in, a bookmark) are ours. Without it, an
// Origin header must name this host; its scheme is not compared, because a
// TLS-terminating proxy in front of the listener changes it and a page of
// another origin cannot be served from this host and port. With neither header
// the request is not a browser's.
func crossOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site != "same-origin" && site != "none"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	return err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host)
}
