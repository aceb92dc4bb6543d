package service_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test starts and stops real receivers and workers; none may leave a
// goroutine behind (an unclosed pool, a server that did not shut down).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
