package portproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The outgoing request's URL host names the environment and port,
// "<envID>:<port>", so the one shared Transport pools connections per
// environment port; the dial function travels in the request context.
type dialKey struct{}

// serverSessionCookie is the server's login cookie. Browsers share cookies
// across ports of one host, so when the server and the proxy share a host
// name (cove up on one machine) it reaches the proxy and must go no further.
const serverSessionCookie = "cove_session"

type dialer struct {
	envID string
	dial  func(ctx context.Context, port int) (net.Conn, error)
}

func newTransport() *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d, ok := ctx.Value(dialKey{}).(dialer)
			host, ps, err := net.SplitHostPort(addr)
			if !ok || err != nil || host != d.envID {
				return nil, fmt.Errorf("port proxy: no dialer for %s", addr)
			}
			port, err := strconv.Atoi(ps)
			if err != nil {
				return nil, fmt.Errorf("port proxy: bad port in %s", addr)
			}
			return d.dial(ctx, port)
		},
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls and slow builds are fine
		ForceAttemptHTTP2:     false,
	}
}

// newTLSTransport is newTransport for ports that serve HTTPS: TLS over
// the connection dialled inside the environment, without verifying the
// application's certificate (see Target.HTTPS).
func newTLSTransport() *http.Transport {
	t := newTransport()
	t.TLSClientConfig = &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // the env's own cert, on its loopback, reached through its agent
		ServerName:         "localhost",
	}
	return t
}

// forward sends the request to the port inside the environment.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request, t Target, rt route) {
	ctx := context.WithValue(r.Context(), dialKey{}, dialer{envID: t.EnvID, dial: t.Dial})
	tr, scheme := p.tr, "http"
	if t.HTTPS != nil && t.HTTPS(rt.port) {
		tr, scheme = p.tlsTr, "https"
	}
	rp := &httputil.ReverseProxy{
		Transport:     tr,
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			out := pr.Out
			out.URL.Scheme = scheme
			out.URL.Host = t.EnvID + ":" + strconv.Itoa(rt.port)
			out.URL.Path, out.URL.RawPath = splitEscaped(rt.rest)
			// Development servers check Host against localhost; the
			// public name is in X-Forwarded-Host.
			out.Host = "localhost:" + strconv.Itoa(rt.port)
			if rt.prefix != "" {
				out.Header.Set("X-Forwarded-Prefix", rt.prefix)
			}
			stripCredentials(out.Header)
		},
		ModifyResponse: func(resp *http.Response) error {
			if rt.prefix != "" {
				rewriteLocation(resp.Header, rt.prefix)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			p.log.Info("port proxy: upstream", "env", t.EnvID, "port", rt.port, "err", err)
			if scheme == "https" {
				httpError(w, http.StatusBadGateway, fmt.Sprintf("port %d in the environment does not answer over HTTPS (devcontainer.json portsAttributes gives it protocol \"https\"; remove that if it serves plain HTTP)", rt.port))
				return
			}
			httpError(w, http.StatusBadGateway, fmt.Sprintf("nothing answers on port %d in the environment", rt.port))
		},
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
}

// splitEscaped turns an escaped path into url.URL's Path and RawPath.
func splitEscaped(escaped string) (string, string) {
	path, err := url.PathUnescape(escaped)
	if err != nil || path == escaped {
		return escaped, ""
	}
	return path, escaped
}

// stripCredentials removes cove's credentials, which are for the proxy and
// must not reach the application.
func stripCredentials(h http.Header) {
	if tok, ok := bearerToken(&http.Request{Header: h}); ok && tok != "" {
		h.Del("Authorization")
	}
	// Some clients send the login redirect, token included, as Referer.
	if ref, err := url.Parse(h.Get("Referer")); err == nil && ref.Path == AuthPath {
		h.Del("Referer")
	}
	cookies := h.Values("Cookie")
	if len(cookies) == 0 {
		return
	}
	var kept []string
	for _, line := range cookies {
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name == CookieName || name == serverSessionCookie || strings.TrimSpace(part) == "" {
				continue
			}
			kept = append(kept, strings.TrimSpace(part))
		}
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// rewriteLocation keeps root-relative redirects of an application that does
// not know its path prefix inside it.
func rewriteLocation(h http.Header, prefix string) {
	loc := h.Get("Location")
	if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || loc == prefix || strings.HasPrefix(loc, prefix+"/") {
		return
	}
	h.Set("Location", prefix+loc)
}
