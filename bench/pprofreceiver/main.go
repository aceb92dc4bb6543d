// Command pprofreceiver is the receiver (cmd/receiver) with net/http/pprof served
// on BENCH_PPROF_ADDR (a loopback address), for bench/run.sh with BENCH_PROFILE_DIR
// set. A bench-only build: never deploy it.
package main

import (
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"time"

	"github.com/connectrelay/connectrelay/service"
)

func main() {
	addr := os.Getenv("BENCH_PPROF_ADDR")
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		slog.Error("BENCH_PPROF_ADDR must be a loopback host:port", "addr", addr)
		os.Exit(2)
	}
	go func() {
		srv := &http.Server{Addr: addr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
		if err := srv.ListenAndServe(); err != nil {
			slog.Error("pprof listener", "err", err)
		}
	}()
	service.RunReceiver(service.ReceiverOptions{})
}
