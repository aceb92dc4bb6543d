package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinDirEnv names a directory holding prebuilt receiver, worker and
// connectctl binaries (scripts/scale builds them once); when it is unset,
// Binaries builds them into a temporary directory.
const BinDirEnv = "CONNECTRELAY_BIN_DIR"

// Binaries returns the path of each named command of this module (receiver,
// worker, connectctl), taken from $CONNECTRELAY_BIN_DIR or built with go build
// into a directory removed when the test ends.
func Binaries(t testing.TB, names ...string) map[string]string {
	t.Helper()
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		dir = t.TempDir()
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		for _, n := range names {
			args = append(args, "github.com/connectrelay/connectrelay/cmd/"+n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: go %v: %v\n%s", args, err, out)
		}
	}
	paths := map[string]string{}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("testenv: binary %s: %v (set %s to a directory with the built binaries, or leave it unset)", n, err, BinDirEnv)
		}
		paths[n] = p
	}
	return paths
}

// Process is a child process of a test: a built binary or a server the test
// runs for itself. Its standard output and error go to Output. It is killed
// when the test ends if it still runs.
type Process struct {
	Name   string
	Output io.Writer
	cmd    *exec.Cmd
	done   chan struct{}

	mu  sync.Mutex
	err error // what Wait returned, once done is closed
}

// StartProcess starts bin with args and the environment env (nothing of the
// test's environment is inherited but PATH and HOME), its output written to
// out (discarded when nil), and kills it when the test ends. It may be
// called from any goroutine of the test.
func StartProcess(t testing.TB, name, bin string, env []string, out io.Writer, args ...string) (*Process, error) {
	p, err := startProcess(name, bin, env, out, args...)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	t.Cleanup(p.Kill)
	return p, nil
}

func startProcess(name, bin string, env []string, out io.Writer, args ...string) (*Process, error) {
	if out == nil {
		out = io.Discard
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, Output: out, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Kill stops the process with SIGKILL, as a crash would, and waits for it
// (idempotent).
func (p *Process) Kill() {
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM and waits up to within for the process to exit; it
// returns the exit error (nil for status 0), or an error after killing it
// when it did not exit in time.
func (p *Process) Stop(within time.Duration) error {
	if ok, err := p.Exited(); ok {
		return fmt.Errorf("%s had already exited: %w", p.Name, errOrExit0(err))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		_, err := p.Exited()
		if err != nil {
			return fmt.Errorf("%s after SIGTERM: %w", p.Name, err)
		}
		return nil
	case <-time.After(within):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, within)
	}
}

var errExit0 = errors.New("exit status 0")

func errOrExit0(err error) error {
	if err == nil {
		return errExit0
	}
	return err
}

// FreePort returns a loopback TCP port nothing listens on right now, for a
// child process told where to listen (another process may take it before
// the child does; on a test machine that is rare).
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
