package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
)

// PortsCommand is `cove ports`.
func PortsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "ports", Aliases: []string{"port"}, Short: "List and share an environment's listening ports"}
	cmd.AddCommand(portsList(), portsShare())
	return cmd
}

func portsList() *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List the TCP ports something listens on in an environment",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			name := strings.TrimSuffix(args[0], ".cove")
			resp, err := c.Environments.GetEnvironment(cmd.Context(), connect.NewRequest(&covev1.GetEnvironmentRequest{Id: name}))
			if err != nil {
				return err
			}
			printPorts(cmd.OutOrStdout(), resp.Msg.Environment.GetStatus().GetPorts())
			return nil
		},
	}
}

func printPorts(w io.Writer, ports []*covev1.Port) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tSERVICE\tADDRESS\tPROTOCOL\tVISIBILITY\tLABEL\tURL")
	for _, p := range ports {
		addr := termsafe.Line(p.GetAddress())
		if addr == "" {
			addr = "(not listening)"
		}
		// The Compose service ("-": the dev container's own port) and
		// the protocol the port proxy speaks to it (portsAttributes).
		svc, proto := termsafe.Line(p.GetService()), termsafe.Line(p.GetProtocol())
		if svc == "" {
			svc = "-"
		}
		if proto == "" {
			proto = "http"
		}
		// Labels come from the repository's devcontainer.json, addresses
		// and URLs from the runner: remote text, made safe.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetPort(), svc, addr, proto, visibilityName(p.GetVisibility()), termsafe.Line(p.GetLabel()), termsafe.Line(p.GetUrl()))
	}
	_ = tw.Flush()
}

var visibilities = map[string]covev1.PortVisibility{
	"private":      covev1.PortVisibility_PORT_VISIBILITY_PRIVATE,
	"organization": covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION,
	"public":       covev1.PortVisibility_PORT_VISIBILITY_PUBLIC,
}

func parseVisibility(s string) (covev1.PortVisibility, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "org" {
		s = "organization"
	}
	v, ok := visibilities[s]
	if !ok {
		return 0, fmt.Errorf("unknown visibility %q (use private, organization or public)", s)
	}
	return v, nil
}

func visibilityName(v covev1.PortVisibility) string {
	for name, vv := range visibilities {
		if vv == v {
			return name
		}
	}
	return "private" // unspecified
}

func portsShare() *cobra.Command {
	var visibility string
	cmd := &cobra.Command{
		Use:   "share NAME PORT --visibility private|organization|public",
		Short: "Set who may reach a port through the runner's port proxy",
		Long: "Set who may reach PORT of environment NAME through the runner's HTTP port proxy:\n" +
			"private (only you), organization (members of your organization) or public (anyone).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1], false)
			if err != nil {
				return err
			}
			v, err := parseVisibility(visibility)
			if err != nil {
				return err
			}
			c, _, err := clients()
			if err != nil {
				return err
			}
			name := strings.TrimSuffix(args[0], ".cove")
			resp, err := c.Environments.SharePort(cmd.Context(), connect.NewRequest(&covev1.SharePortRequest{
				Id: name, Port: int32(port), Visibility: v,
			}))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Port %d of %s is now %s.\n", port, name, visibilityName(v))
			for _, p := range resp.Msg.GetEnvironment().GetStatus().GetPorts() {
				if p.GetPort() == int32(port) && p.GetUrl() != "" {
					fmt.Fprintln(cmd.OutOrStdout(), termsafe.Line(p.GetUrl()))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&visibility, "visibility", "", "private, organization or public")
	_ = cmd.MarkFlagRequired("visibility")
	return cmd
}

// parsePort parses a TCP port number; zero is allowed only if zeroOK.
func parsePort(s string, zeroOK bool) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !zeroOK) {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return n, nil
}

// forward is one `cove port-forward` argument.
type forward struct {
	local  int // 0: pick a free port
	remote int
}

// parseForwards parses [LOCAL:]REMOTE arguments. LOCAL defaults to REMOTE;
// 0 picks a free port.
func parseForwards(args []string) ([]forward, error) {
	var out []forward
	used := map[int]bool{}
	for _, a := range args {
		l, r, hasLocal := strings.Cut(a, ":")
		if !hasLocal {
			l, r = a, a
		}
		remote, err := parsePort(r, false)
		if err != nil {
			return nil, fmt.Errorf("%s: remote port: %w", a, err)
		}
		local, err := parsePort(l, true)
		if err != nil {
			return nil, fmt.Errorf("%s: local port: %w", a, err)
		}
		if local != 0 && used[local] {
			return nil, fmt.Errorf("local port %d given twice", local)
		}
		used[local] = true
		out = append(out, forward{local: local, remote: remote})
	}
	return out, nil
}

// PortForwardCommand is `cove port-forward`.
func PortForwardCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "port-forward NAME [LOCAL:]REMOTE...",
		Short: "Forward local ports to ports in an environment",
		Long: "Listen on 127.0.0.1:LOCAL (default: the same number as REMOTE; 0 picks a free port)\n" +
			"and forward each connection to port REMOTE inside environment NAME, over one\n" +
			"authenticated SSH connection through the runner's gateway. Runs until interrupted.",
		Example: "  cove port-forward demo 3000 8081:8080",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fwds, err := parseForwards(args[1:])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			name := strings.TrimSuffix(args[0], ".cove")
			return portForward(ctx, cmd.ErrOrStderr(), &tunnel{name: name, connect: gatewayConnect(name)}, fwds)
		},
	}
}

// tunnel is the SSH connection to an environment, re-established when it
// drops (e.g. after the environment restarted).
type tunnel struct {
	name    string
	connect func(context.Context) (*ssh.Client, error)

	mu     sync.Mutex
	client *ssh.Client
	dead   chan struct{} // closed when client's connection ended
}

func (t *tunnel) get(ctx context.Context) (*ssh.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		select {
		case <-t.dead:
			t.client = nil
		default:
			return t.client, nil
		}
	}
	c, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	dead := make(chan struct{})
	go func() { _ = c.Wait(); close(dead) }()
	t.client, t.dead = c, dead
	return c, nil
}

// gatewayConnect connects to environment name through its runner's SSH
// gateway with a fresh certificate.
func gatewayConnect(name string) func(context.Context) (*ssh.Client, error) {
	return func(ctx context.Context) (*ssh.Client, error) {
		target, err := certify(ctx, name)
		if err != nil {
			return nil, err
		}
		c, err := ssh.Dial("tcp", target.addr, sshgw.ClientConfig(target.signer, target.cert, target.hostCA))
		if err != nil {
			return nil, fmt.Errorf("ssh %s via %s: %w", name, target.addr, err)
		}
		return c, nil
	}
}

func (t *tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		t.client.Close()
	}
}

// dial connects to port inside the environment: its IPv4 loopback, or its
// IPv6 loopback when nothing listens on the former.
func (t *tunnel) dial(ctx context.Context, port int) (net.Conn, error) {
	c, err := t.get(ctx)
	if err != nil {
		return nil, err
	}
	p := strconv.Itoa(port)
	conn, err := c.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", p))
	if err == nil {
		return conn, nil
	}
	if conn6, err6 := c.DialContext(ctx, "tcp", net.JoinHostPort("::1", p)); err6 == nil {
		return conn6, nil
	}
	return nil, err
}

// portForward listens for each forward and serves it through t until ctx
// is done.
func portForward(ctx context.Context, log io.Writer, t *tunnel, fwds []forward) error {
	defer t.close()
	// Connect first, so a stopped environment or a failed login is reported
	// before anything listens.
	if _, err := t.get(ctx); err != nil {
		return err
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, f := range fwds {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.local)))
		if err != nil {
			return fmt.Errorf("listen on local port %d: %w", f.local, err)
		}
		lns = append(lns, ln)
		fmt.Fprintf(log, "Forwarding %s -> %s:%d\n", ln.Addr(), t.name, f.remote)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveForward(ctx, log, t, ln, fwds[i].remote)
		}()
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	t.close()
	wg.Wait()
	return nil
}

// serveForward accepts connections on ln and forwards each to remote.
func serveForward(ctx context.Context, log io.Writer, t *tunnel, ln net.Listener, remote int) {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintf(log, "accept on %s: %v\n", ln.Addr(), err)
			}
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			rc, err := t.dial(ctx, remote)
			if err != nil {
				fmt.Fprintf(log, "forward %s -> %s:%d: %v\n", c.RemoteAddr(), t.name, remote, err)
				return
			}
			defer rc.Close()
			pipe(ctx, c, rc)
		}()
	}
}

// pipe copies both ways, passing half-closes through, until both
// directions end or ctx is done.
func pipe(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}
