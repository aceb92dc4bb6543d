package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoad_StaleSince(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    time.Time
		wantErr string
	}{
		{"", time.Time{}, ""},
		{"2026-03-04T05:06:07Z", time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), ""},
		{"2026-03-04T07:06:07+02:00", time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), ""},
		{"2026-03-04", time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC), ""},
		{"yesterday", time.Time{}, "STALE_SINCE"},
		{"2026-13-01", time.Time{}, "STALE_SINCE"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			m := minimal()
			m["STALE_SINCE"] = tc.raw
			c, err := Load(env(m))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load(STALE_SINCE=%q) = %v, want an error naming %s", tc.raw, err, tc.wantErr)
				}
				return
			}
			if err != nil || !c.StaleSince.Equal(tc.want) {
				t.Fatalf("Load(STALE_SINCE=%q) = %v, %v; want %v", tc.raw, c.StaleSince, err, tc.want)
			}
		})
	}
}

func TestLoadOps_ReadsTheServiceVariablesAndNamesBadOnes(t *testing.T) {
	o, err := LoadOps(env(map[string]string{}))
	if err != nil {
		t.Fatalf("LoadOps(empty): %v", err)
	}
	if o.DatabaseURL != "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" || o.RedisURL != "redis://127.0.0.1:6379/0" || o.SecretKey != nil {
		t.Errorf("LoadOps(empty) = %+v, want Load's defaults and no key", o)
	}
	o, err = LoadOps(env(map[string]string{"CONNECT_SECRET_KEY": testKey, "DATABASE_URL": "postgres://db/x"}))
	if err != nil || len(o.SecretKey) != 32 || o.DatabaseURL != "postgres://db/x" {
		t.Errorf("LoadOps with a key = %+v, %v", o, err)
	}
	for name, v := range map[string]string{
		"DATABASE_URL":                "mysql://db/x",
		"REDIS_URL":                   "http://redis",
		"CONNECT_SECRET_KEY":          "c2hvcnQ=",
		"CONNECT_SECRET_KEY_PREVIOUS": "c2hvcnQ=",
		"DEV_MODE":                    "perhaps",
	} {
		if _, err := LoadOps(env(map[string]string{name: v})); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("LoadOps(%s=%q) = %v, want an error naming %s", name, v, err, name)
		}
	}
}
