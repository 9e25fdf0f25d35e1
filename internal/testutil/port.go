package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback TCP address ("127.0.0.1:port") that
// refuses connections until the test ends: a socket is bound to it without
// listening, so no other program can take the port meanwhile, as it could
// one that a test listened on and closed to find a free one.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:0: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

var (
	freePortsMu sync.Mutex
	freePorts   = map[int]bool{} // handed out by FreePort in this process
)

// FreePort returns a loopback TCP address ("127.0.0.1:port") nothing
// listens on, for a program under test to listen on. The port is below the
// kernel's ephemeral range (ip_local_port_range), which the kernel hands to
// every bind to port 0 and every outgoing connection: a port from that
// range, found free by listening on it and closing, could be taken by any
// other test before the program binds it. FreePort never returns the same
// port twice in one process.
func FreePort(t testing.TB) string {
	t.Helper()
	lo := ephemeralLow()
	const floor = 10000 // below: well-known and registered services
	if lo-floor < 1000 {
		t.Fatalf("FreePort: the ephemeral port range starts at %d, leaving no room below it", lo)
	}
	freePortsMu.Lock()
	defer freePortsMu.Unlock()
	for range 1000 {
		port := floor + rand.IntN(lo-floor)
		if freePorts[port] {
			continue
		}
		// Free on every address (programs may listen on 0.0.0.0).
		ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		freePorts[port] = true
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	t.Fatalf("FreePort: no free port found in [%d, %d)", floor, lo)
	return ""
}

// ephemeralLow returns the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil {
				return lo
			}
		}
	}
	return 32768 // Linux's default
}
