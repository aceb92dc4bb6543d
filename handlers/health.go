package handlers

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// ReadyTimeout bounds the readiness probe: a dependency slower than this is as
// good as down for a receiver that must answer within a second.
const ReadyTimeout = 500 * time.Millisecond

// health says the process is up; it checks nothing else, so an orchestrator never
// restarts a healthy receiver because Redis blinked.
func (s *Server) health(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// ready checks every dependency in parallel and answers 503 naming the ones that
// did not answer, so a load balancer stops sending traffic that would only get 503s.
func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), ReadyTimeout)
	defer cancel()
	results := make(map[string]string, len(s.d.Ready))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ch := range s.d.Ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state := "ok"
			if err := ch.Check(ctx); err != nil {
				state = "unavailable"
			}
			mu.Lock()
			results[ch.Name] = state
			mu.Unlock()
		}()
	}
	wg.Wait()
	status := http.StatusOK
	for _, v := range results {
		if v != "ok" {
			status = http.StatusServiceUnavailable
		}
	}
	return c.JSON(status, results)
}
