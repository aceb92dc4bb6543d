package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

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
