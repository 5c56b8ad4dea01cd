package nettest_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/shoal-project/shoal/internal/nettest"
)

// TestRefusedAddr: the address refuses connections, and nobody else can
// listen on it while the test runs.
func TestRefusedAddr(t *testing.T) {
	addr := nettest.RefusedAddr(t)
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s: connected, want ECONNREFUSED", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want ECONNREFUSED", addr, err)
		}
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listen %s: succeeded while the port is held", addr)
	}
}
