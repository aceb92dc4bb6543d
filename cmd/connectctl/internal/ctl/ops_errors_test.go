package ctl

import (
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/internal/testenv"
)

func TestOpsCommands_BadArgumentsExit2WithOneLineNamingTheArgument(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC) }
	// Nothing listens at the database and Redis: a command that connected
	// before checking its arguments would exit 1, not 2.
	closed := testenv.ClosedAddr(t)
	base := map[string]string{
		"DATABASE_URL":       "postgres://postgres@" + closed + "/x?sslmode=disable",
		"REDIS_URL":          "redis://" + closed + "/0",
		"CONNECT_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	}
	for _, tc := range []struct {
		args  []string
		env   map[string]string
		names string
	}{
		{[]string{"tenants"}, nil, "subcommand"},
		{[]string{"tenants", "delete"}, nil, `"delete"`},
		{[]string{"tenants", "list", "--state", "gone"}, nil, "--state"},
		{[]string{"tenants", "list", "--license", "paid"}, nil, "--license"},
		{[]string{"tenants", "list", "extra"}, nil, `"extra"`},
		{[]string{"tenants", "list", "--bogus"}, nil, "-bogus"},
		{[]string{"tenants", "show"}, nil, "CLIENTKEY"},
		{[]string{"tenants", "show", "a", "b"}, nil, "CLIENTKEY"},
		{[]string{"tenants", "show", " "}, nil, "CLIENTKEY"},
		{[]string{"tenants", "show", "a", "--events", "0"}, nil, "--events"},
		{[]string{"transfers", "list", "--limit", "0"}, nil, "--limit"},
		{[]string{"transfers", "list", "--limit", "many"}, nil, "-limit"},
		{[]string{"transfers", "list", "--open=maybe"}, nil, "-open"},
		{[]string{"transfers", "show"}, nil, "TRANSFERID"},
		{[]string{"transfers", "pause", "x"}, nil, `"pause"`},
		{[]string{"stale"}, nil, "--since"},
		{[]string{"stale", "--since", "yesterday"}, nil, "--since"},
		{[]string{"stale", "--since", "2026-03-09T12:00:00Z"}, nil, "--since"},
		{[]string{"stale", "--since", "2026-03-12"}, nil, "--since"},
		{[]string{"stale", "--since", "2026-03-01", "--limit", "-1"}, nil, "--limit"},
		{[]string{"reencrypt", "--batch", "0"}, nil, "--batch"},
		{[]string{"reencrypt"}, map[string]string{"CONNECT_SECRET_KEY": ""}, "CONNECT_SECRET_KEY"},
		{[]string{"reencrypt"}, map[string]string{"CONNECT_SECRET_KEY": "c2hvcnQ="}, "CONNECT_SECRET_KEY"},
		{[]string{"reencrypt"}, map[string]string{"CONNECT_SECRET_KEY_PREVIOUS": "c2hvcnQ="}, "CONNECT_SECRET_KEY_PREVIOUS"},
		{[]string{"tasks", "requeue"}, nil, "--tenant"},
		{[]string{"tasks", "requeue", "--tenant", "a", "--type", "tenant:init"}, nil, "exactly one of --tenant, --transfer or --type"},
		{[]string{"tasks", "requeue", "--type", "tenant:nope"}, nil, "--type"},
		{[]string{"tasks", "retry"}, nil, `"retry"`},
		{[]string{"tenants", "list"}, map[string]string{"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"},
		{[]string{"tasks", "requeue", "--type", "tenant:init"}, map[string]string{"REDIS_URL": "http://redis"}, "REDIS_URL"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			code, out, errOut := run(t, env, now, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d (stderr %q)", code, ExitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.names) {
				t.Errorf("stderr %q does not name %s", errOut, tc.names)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "connectctl ") {
				t.Errorf("stderr is not one line starting with connectctl: %q", errOut)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestOpsCommands_UnansweringDatabaseOrRedisExit1Within2s(t *testing.T) {
	t.Parallel()
	frozenDB := testenv.NewProxy(t, "127.0.0.1:5432")
	frozenDB.Freeze()
	frozenRedis := testenv.NewProxy(t, testenv.RedisAddr())
	frozenRedis.Freeze()
	closed := testenv.ClosedAddr(t)
	redisURL := testenv.RedisURL(t)
	key := map[string]string{"CONNECT_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	commands := [][]string{
		{"tenants", "list"}, {"tenants", "show", "a"}, {"transfers", "list", "--open"}, {"transfers", "show", "tr"},
		{"stale", "--since", "2020-01-01"}, {"reencrypt"}, {"tasks", "requeue", "--tenant", "a"},
	}
	for _, target := range []struct{ name, addr string }{{"refused", closed}, {"hung", frozenDB.Addr()}} {
		for _, args := range commands {
			t.Run(target.name+" database/"+strings.Join(args, " "), func(t *testing.T) {
				t.Parallel()
				env := map[string]string{"DATABASE_URL": "postgres://postgres:pw-not-printed@" + target.addr + "/x?sslmode=disable",
					"REDIS_URL": redisURL}
				for k, v := range key {
					env[k] = v
				}
				start := time.Now()
				code, _, errOut := run(t, env, time.Now, args...)
				elapsed := time.Since(start)
				if code != ExitFailed || elapsed >= 2*time.Second {
					t.Errorf("exit %d after %s, want %d within 2s (stderr %q)", code, elapsed, ExitFailed, errOut)
				}
				if !strings.Contains(errOut, "database at "+target.addr+" does not answer") || strings.Count(errOut, "\n") != 1 {
					t.Errorf("stderr %q is not one line saying the database at %s does not answer", errOut, target.addr)
				}
				if strings.Contains(errOut, "pw-not-printed") {
					t.Errorf("stderr prints the database password: %q", errOut)
				}
			})
		}
	}
	for _, target := range []struct{ name, addr string }{{"refused", closed}, {"hung", frozenRedis.Addr()}} {
		t.Run(target.name+" redis", func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"REDIS_URL": "redis://" + target.addr + "/15"}
			start := time.Now()
			code, _, errOut := run(t, env, time.Now, "tasks", "requeue", "--type", "tenant:init")
			elapsed := time.Since(start)
			if code != ExitFailed || elapsed >= 2*time.Second {
				t.Errorf("exit %d after %s, want %d within 2s (stderr %q)", code, elapsed, ExitFailed, errOut)
			}
			if !strings.Contains(errOut, "redis at "+target.addr+" does not answer") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q is not one line saying redis at %s does not answer", errOut, target.addr)
			}
		})
	}
}
