package service_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/service"
)

func TestWorker_MetricsServerClosesIdleConnections(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 200 * time.Millisecond
	e.startWorker(service.WorkerOptions{Test: service.WorkerTest{MetricsListener: ln, IdleTimeout: idle}})

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One keep-alive request, then the connection sits idle.
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: worker\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read /healthz response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("/healthz = %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	idleFrom := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("the worker's metrics server kept an idle connection open for 5s")
	case !errors.Is(err, io.EOF):
		t.Fatalf("idle connection: %v, want the server to close it (EOF)", err)
	}
	if waited := time.Since(idleFrom); waited < idle/2 {
		t.Errorf("closed after %s, before the idle timeout %s", waited, idle)
	}
}
