package tasks

import (
	"errors"
	"testing"

	"github.com/hibiken/asynq"
)

func TestRedisURL_SentinelClusterAndSingleNodeForms(t *testing.T) {
	tests := []struct {
		url     string
		wantErr bool
		check   func(t *testing.T, p parsedRedis, c asynq.RedisConnOpt)
	}{
		{url: "redis://:pw@127.0.0.1:6380/3", check: func(t *testing.T, p parsedRedis, c asynq.RedisConnOpt) {
			o := c.(asynq.RedisClientOpt)
			if p.single == nil || o.Addr != "127.0.0.1:6380" || o.DB != 3 || o.Password != "pw" {
				t.Errorf("single: %+v %+v", p.single, o)
			}
		}},
		{url: "redis-sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/2?master=relay", check: func(t *testing.T, p parsedRedis, c asynq.RedisConnOpt) {
			f := p.failover
			o := c.(asynq.RedisFailoverClientOpt)
			if f == nil || f.MasterName != "relay" || len(f.SentinelAddrs) != 3 || f.DB != 2 || f.Password != "s3cret" ||
				f.SentinelPassword != "s3cret" || o.MasterName != "relay" || o.DB != 2 || len(o.SentinelAddrs) != 3 {
				t.Errorf("sentinel: %+v %+v", f, o)
			}
		}},
		{url: "redis-sentinel://10.0.0.1:26379/0", wantErr: true},
		{url: "redis-sentinel://10.0.0.1/0?master=m", wantErr: true},
		{url: "redis-sentinel://10.0.0.1:26379/x?master=m", wantErr: true},
		{url: "redis-cluster://:pw@127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", check: func(t *testing.T, p parsedRedis, c asynq.RedisConnOpt) {
			cl := p.cluster
			o := c.(asynq.RedisClusterClientOpt)
			if cl == nil || len(cl.Addrs) != 3 || cl.Addrs[2] != "127.0.0.1:7002" || cl.Password != "pw" || len(o.Addrs) != 3 || o.Password != "pw" {
				t.Errorf("cluster: %+v %+v", cl, o)
			}
		}},
		{url: "redis-cluster://127.0.0.1:7000/0", check: func(t *testing.T, p parsedRedis, _ asynq.RedisConnOpt) {
			if p.cluster == nil || len(p.cluster.Addrs) != 1 {
				t.Errorf("cluster with /0: %+v", p.cluster)
			}
		}},
		{url: "redis-cluster://127.0.0.1:7000/1", wantErr: true},
		{url: "redis-cluster://127.0.0.1/", wantErr: true},
		{url: "redis-cluster://127.0.0.1:7000?master=m", wantErr: true},
		{url: "127.0.0.1:6379", wantErr: true},
	}
	for _, tc := range tests {
		p, err := parseRedisURL(tc.url)
		if tc.wantErr {
			if !errors.Is(err, ErrRedisURL) {
				t.Errorf("%s: %v, want ErrRedisURL", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		c, err := RedisConnOpt(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		tc.check(t, p, c)
	}
}
