package service_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test starts and stops real receivers and workers; none may leave a
// goroutine behind (an unclosed pool, a server that did not shut down). The
// one exception: after Redis died, go-redis's pool re-dials in a goroutine that
// sleeps a second between attempts and ends on its own once the pool is
// closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
