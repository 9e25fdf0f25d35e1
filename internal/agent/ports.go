package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/agent/agentproto"
)

// procNetFiles are the tables of the reading process's network namespace.
var procNetFiles = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// tcpListen is the "st" column value of a socket in state LISTEN.
const tcpListen = "0A"

// listeningPorts reads the listening TCP sockets from the given
// /proc/net/tcp-format files (missing files count as empty: a kernel
// without IPv6 has no tcp6), merged by mergePorts.
func listeningPorts(files []string) ([]agentproto.Port, error) {
	var all []agentproto.Port
	for _, name := range files {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read listening ports: %w", err)
		}
		ports, err := parseProcNet(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		all = append(all, ports...)
	}
	return mergePorts(all), nil
}

// mergePorts returns one Port per port number, sorted. When a port listens
// on several addresses the widest wins: "::" over "0.0.0.0" over a specific
// address over loopback.
func mergePorts(all []agentproto.Port) []agentproto.Port {
	best := map[int]agentproto.Port{}
	for _, p := range all {
		if old, ok := best[p.Port]; !ok || addrRank(p.Address) > addrRank(old.Address) {
			best[p.Port] = p
		}
	}
	out := make([]agentproto.Port, 0, len(best))
	for _, p := range best {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b agentproto.Port) int { return a.Port - b.Port })
	return out
}

// portLister returns how the agent discovers listening ports: sock_diag,
// falling back to the /proc/net tables (files) on a kernel without it.
// With files set explicitly (tests), only the files are read.
func portLister(files []string) func() ([]agentproto.Port, error) {
	if files != nil {
		return func() ([]agentproto.Port, error) { return listeningPorts(files) }
	}
	useProc := false
	return func() ([]agentproto.Port, error) {
		if !useProc {
			ports, err := listeningPortsDiag()
			if !errors.Is(err, errNoSockDiag) {
				return ports, err
			}
			useProc = true
		}
		return listeningPorts(procNetFiles)
	}
}

func addrRank(addr string) int {
	ip := net.ParseIP(addr)
	switch {
	case addr == "::":
		return 4
	case ip != nil && ip.IsUnspecified():
		return 3
	case ip != nil && ip.IsLoopback():
		return 1
	default:
		return 2
	}
}

// parseProcNet returns the listening sockets of one /proc/net/tcp or
// /proc/net/tcp6 table.
func parseProcNet(r io.Reader) ([]agentproto.Port, error) {
	var out []agentproto.Port
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpListen {
			continue
		}
		host, port, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		n, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port in %q", f[1])
		}
		ip, err := parseHexIP(host)
		if err != nil {
			return nil, err
		}
		out = append(out, agentproto.Port{Port: int(n), Address: ip.String()})
	}
	return out, sc.Err()
}

// parseHexIP decodes the kernel's address format: the address as 32-bit
// words, each printed in host byte order.
func parseHexIP(s string) (net.IP, error) {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil, fmt.Errorf("bad address %q", s)
	}
	ip := make(net.IP, len(b))
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.NativeEndian.Uint32(b[i:]))
	}
	if v4 := ip.To4(); v4 != nil && len(ip) == 16 && !ip.Equal(net.IPv6unspecified) {
		return v4, nil // v4-mapped
	}
	return ip, nil
}
