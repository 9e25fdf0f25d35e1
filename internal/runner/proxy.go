package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/portproxy"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// proxyHandler is the runner's HTTP port proxy: it authorizes each request
// with the server and reaches the port through the environment's agent
// (direct-tcpip), so ports bound to the environment's loopback work too.
func (r *Runner) proxyHandler() http.Handler {
	return portproxy.New(portproxy.Config{
		Resolver:   proxyResolver{r},
		Authorizer: proxyAuthorizer{r},
		ServerURL:  r.cfg.ServerPublicURL,
		Domain:     r.cfg.ProxyDomain,
		Activity:   r.touch,
		Log:        r.log.With("component", "portproxy"),
	})
}

type proxyResolver struct{ r *Runner }

// proxyServer is the port proxy's HTTP server on ln, with its timeouts
// and caps on unauthenticated connections (portproxy.NewServer).
func (r *Runner) proxyServer(ln net.Listener) (*http.Server, net.Listener) {
	return portproxy.NewServer(r.proxyHandler(), ln, portproxy.Limits{}, r.log.With("component", "portproxy"))
}

// Named returns the ids of the running environments here named name, of
// any owner: the proxy decides which one (if any) the request's user owns.
func (p proxyResolver) Named(_ context.Context, name string) []string {
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, w := range r.workers {
		if w.isRunning() && w.latest().GetMetadata().GetName() == name {
			ids = append(ids, id)
		}
	}
	return ids
}

// Resolve finds the running environment with this id.
func (p proxyResolver) Resolve(ctx context.Context, ref string) (portproxy.Target, error) {
	r := p.r
	r.mu.Lock()
	w := r.workers[ref]
	r.mu.Unlock()
	if w == nil || !w.isRunning() {
		return portproxy.Target{}, fmt.Errorf("environment %q is not running on this runner", ref)
	}
	env := w.latest()
	ep := r.agentEndpoint(env.Id)
	return portproxy.Target{
		EnvID:   env.Id,
		OwnerID: env.GetMetadata().GetOwnerId(),
		Dial: func(ctx context.Context, port int) (net.Conn, error) {
			c, err := r.pool.Get(ctx, env.Id, ep)
			if err != nil {
				return nil, err
			}
			conn, err := c.DialTCP(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				// Something listening on IPv6 loopback only.
				if conn6, err6 := c.DialTCP(ctx, net.JoinHostPort("::1", strconv.Itoa(port))); err6 == nil {
					return conn6, nil
				}
			}
			return conn, err
		},
		HTTPS: func(port int) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return portHTTPS(w.dcPorts, port)
		},
	}, nil
}

type proxyAuthorizer struct{ r *Runner }

// Authorize asks the server; it knows users, organizations and sharing.
func (p proxyAuthorizer) Authorize(ctx context.Context, envID string, port int, token string) (bool, string, time.Duration, error) {
	if p.r.client == nil {
		return false, "", 0, errors.New("runner is not connected to a server yet")
	}
	resp, err := p.r.client.api.AuthorizePortAccess(ctx, connect.NewRequest(&covev1.AuthorizePortAccessRequest{
		EnvironmentId: envID, Port: int32(port), Token: token,
	}))
	if err != nil {
		return false, "", 0, err
	}
	m := resp.Msg
	return m.GetAllowed(), m.GetUserId(), time.Duration(m.GetCacheSeconds()) * time.Second, nil
}

// portURL is the URL of port through this runner's HTTP port proxy.
func (r *Runner) portURL(env *covev1.Environment, port int) string {
	if r.proxyURL == "" {
		return ""
	}
	if r.cfg.ProxyDomain != "" {
		// Host form: one origin per port (see docs/networking.md).
		if u, err := url.Parse(r.proxyURL); err == nil {
			host := fmt.Sprintf("%d--%s.%s", port, env.Id, r.cfg.ProxyDomain)
			if p := u.Port(); p != "" {
				host = net.JoinHostPort(host, p)
			}
			return u.Scheme + "://" + host + "/"
		}
	}
	return fmt.Sprintf("%s/p/%s/%d/", r.proxyURL, env.Id, port)
}
