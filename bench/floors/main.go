// Command floors serves the baselines the benchmark script compares the receiver
// against, on one loopback port: GET /ceiling (Echo with no work), POST /enqueue
// (HS256 verify + one asynq enqueue) and POST /durable (HS256 verify + one committed
// Postgres insert + one enqueue). With -mint N it instead writes N HS256 tokens, one
// a line, to -tokens and exits, for the wrk Lua script to sign requests with.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
)

// secret is the HS256 key shared by the minter and the server; a bench-only value.
const secret = "bench-floor-shared-secret-0123456789"

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "loopback listen address")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	redisDB := flag.Int("redis-db", 14, "Redis logical db for the floor's queue")
	dbURL := flag.String("db", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres URL")
	mint := flag.Int("mint", 0, "write this many tokens to -tokens and exit")
	tokens := flag.String("tokens", "tokens.txt", "token file for -mint")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *mint > 0 {
		if err := mintTokens(*tokens, *mint); err != nil {
			log.Error("mint", "err", err)
			os.Exit(1)
		}
		return
	}
	if err := serve(*addr, *redisAddr, *redisDB, *dbURL, log); err != nil {
		log.Error("floors", "err", err)
		os.Exit(1)
	}
}

func mintTokens(path string, n int) error {
	var b strings.Builder
	exp := time.Now().Add(time.Hour)
	for i := range n {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": fmt.Sprintf("ck-%d", i%256), "iat": time.Now().Unix(), "exp": exp.Unix(), "qsh": "bench",
		}).SignedString([]byte(secret))
		if err != nil {
			return fmt.Errorf("sign token %d: %w", i, err)
		}
		b.WriteString(tok)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	return nil
}

func serve(addr, redisAddr string, redisDB int, dbURL string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_floor_events (
		id bigserial PRIMARY KEY, client_key text NOT NULL, body text NOT NULL, received_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create floor table: %w", err)
	}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: redisAddr, DB: redisDB})
	defer client.Close()

	verify := func(c echo.Context) (string, error) {
		raw, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "JWT ")
		if !ok {
			return "", errors.New("no JWT")
		}
		tok, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return []byte(secret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
		if err != nil {
			return "", err
		}
		return tok.Claims.GetIssuer()
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/ceiling", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.POST("/enqueue", func(c echo.Context) error {
		iss, err := verify(c)
		if err != nil {
			return c.NoContent(http.StatusUnauthorized)
		}
		rctx, cancel := context.WithTimeout(c.Request().Context(), 950*time.Millisecond)
		defer cancel()
		if _, err := client.EnqueueContext(rctx, asynq.NewTask("bench:floor", []byte(iss))); err != nil {
			return c.NoContent(http.StatusServiceUnavailable)
		}
		return c.NoContent(http.StatusOK)
	})
	e.POST("/durable", func(c echo.Context) error {
		iss, err := verify(c)
		if err != nil {
			return c.NoContent(http.StatusUnauthorized)
		}
		rctx, cancel := context.WithTimeout(c.Request().Context(), 950*time.Millisecond)
		defer cancel()
		if _, err := pool.Exec(rctx, `INSERT INTO bench_floor_events (client_key, body) VALUES ($1, $2)`, iss, "{}"); err != nil {
			return c.NoContent(http.StatusServiceUnavailable)
		}
		if _, err := client.EnqueueContext(rctx, asynq.NewTask("bench:floor", []byte(iss))); err != nil {
			return c.NoContent(http.StatusServiceUnavailable)
		}
		return c.NoContent(http.StatusOK)
	})
	srv := &http.Server{Addr: addr, Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("floors listening", "addr", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}
