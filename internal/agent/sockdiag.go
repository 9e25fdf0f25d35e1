package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"

	"github.com/covedev/cove/internal/agent/agentproto"
	"golang.org/x/sys/unix"
)

// Port discovery through the kernel's sock_diag netlink interface, asking
// for listening TCP sockets only. Reading /proc/net/tcp walks the host's
// whole established-connections hash table (shared by every network
// namespace: 262,144 buckets on a 24 GiB host, milliseconds of kernel time
// per read) to print the environment's few sockets; a sock_diag dump
// restricted to state LISTEN walks only the listening hash. The request is
// answered for the caller's network namespace: the agent's, the
// environment's.

const (
	tcpStateListen      = 10 // TCP_LISTEN
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states, inet_diag_sockid
	sizeofInetDiagMsg   = 72 // family … sockid … expires, rqueue, wqueue, uid, inode
)

// errNoSockDiag means sock_diag cannot be used here (no netlink socket,
// or no inet_diag for a family): the caller falls back to /proc/net.
var errNoSockDiag = errors.New("sock_diag unavailable")

// listeningPortsDiag returns the listening TCP ports of the caller's
// network namespace, merged over IPv4 and IPv6 as listeningPorts does.
func listeningPortsDiag() ([]agentproto.Port, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		// No netlink (a seccomp profile, a kernel without it): use /proc.
		return nil, fmt.Errorf("%w: socket: %v", errNoSockDiag, err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("%w: bind: %v", errNoSockDiag, err)
	}
	var all []agentproto.Port
	buf := make([]byte, 32<<10)
	for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ports, err := dumpListening(fd, family, uint32(i+1), buf)
		if errors.Is(err, errNoSockDiag) && family == unix.AF_INET6 {
			continue // a kernel without IPv6
		}
		if err != nil {
			return nil, err
		}
		all = append(all, ports...)
	}
	return mergePorts(all), nil
}

// dumpListening sends one SOCK_DIAG_BY_FAMILY dump request for TCP sockets
// in state LISTEN of family and reads its answer.
func dumpListening(fd int, family uint8, seq uint32, buf []byte) ([]agentproto.Port, error) {
	req := make([]byte, unix.SizeofNlMsghdr+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	body := req[unix.SizeofNlMsghdr:]
	body[0], body[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(body[4:], 1<<tcpStateListen)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []agentproto.Port
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("sock_diag: short error message")
				}
				errno := syscall.Errno(-int32(ne.Uint32(m.Data)))
				if errno == 0 {
					continue
				}
				if errno == unix.ENOENT || errno == unix.EINVAL || errno == unix.EOPNOTSUPP {
					return nil, fmt.Errorf("%w: %v", errNoSockDiag, errno)
				}
				return nil, fmt.Errorf("sock_diag: %w", errno)
			case unix.SOCK_DIAG_BY_FAMILY:
				p, ok := parseInetDiagMsg(m.Data)
				if ok {
					out = append(out, p)
				}
			}
		}
	}
}

// parseInetDiagMsg reads the local address and port of one inet_diag_msg
// (the port is big-endian, the addresses network order).
func parseInetDiagMsg(b []byte) (agentproto.Port, bool) {
	if len(b) < sizeofInetDiagMsg || b[1] != tcpStateListen {
		return agentproto.Port{}, false
	}
	port := int(binary.BigEndian.Uint16(b[4:6]))
	var ip net.IP
	switch b[0] {
	case unix.AF_INET:
		ip = net.IP(slices.Clone(b[8:12]))
	case unix.AF_INET6:
		ip = net.IP(slices.Clone(b[8:24]))
		if v4 := ip.To4(); v4 != nil && !ip.Equal(net.IPv6unspecified) {
			ip = v4 // v4-mapped
		}
	default:
		return agentproto.Port{}, false
	}
	return agentproto.Port{Port: port, Address: ip.String()}, true
}
