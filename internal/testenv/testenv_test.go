package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func TestPostgresURL_GivesAFreshDatabaseAndDropsStaleOnes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	stale := fmt.Sprintf("%s%d_%s", dbPrefix, time.Now().Add(-3*staleAfter).Unix(), randomSuffix())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+stale); err != nil {
		t.Fatal(err)
	}
	u := PostgresURL(t)
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer c.Close(context.Background())
	var tables int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("fresh database has %d tables (%v)", tables, err)
	}
	var n int
	_ = admin.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, stale).Scan(&n)
	if n != 0 {
		t.Errorf("stale database %s was not dropped", stale)
	}
}

func TestRedis_ClaimsDistinctFlushedDatabases(t *testing.T) {
	a, b := Redis(t), Redis(t)
	if a == b || a < 1 || b < 1 {
		t.Fatalf("claimed databases %d and %d, want two distinct ones in 1..15", a, b)
	}
	c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: a})
	defer c.Close()
	if n, err := c.DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("claimed database %d holds %d keys (%v)", a, n, err)
	}
}
