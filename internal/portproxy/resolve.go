package portproxy

import (
	"context"
	"strings"
	"time"
)

// Which environment a URL reaches, and who may learn that it exists:
//
//   - By id (/p/<id>/<port>/, <port>--<id>.<domain>): the environment with
//     that id, for everyone the port's sharing allows. Ids are random and
//     only their holders can use them; status.ports URLs carry them.
//   - By name: only the environment of that name **owned by the user the
//     request's credential belongs to**. Names are unique per owner, not
//     per runner, so nobody else's environment can answer to your name
//     (no squatting, no origin takeover in the host form), and a request
//     by name that is anonymous or from another user learns nothing: it
//     gets the same answer whether or not the name exists.
//
// An id wins over a name that happens to look the same.

// access finds the environment rt names and decides whether the request's
// credential tok may reach the port, and as whom (userID "": anonymous,
// e.g. on a public port). allowed false covers "no such environment
// running here" as well as "not allowed", on purpose.
func (p *proxy) access(ctx context.Context, rt route, tok string) (t Target, allowed bool, userID string, err error) {
	if t, err := p.cfg.Resolver.Resolve(ctx, rt.envRef); err == nil {
		allowed, userID, err := p.decide(ctx, t.EnvID, rt.port, tok)
		return t, allowed, userID, err
	}
	nr, ok := p.cfg.Resolver.(NameResolver)
	if !ok || !isCoveCredential(tok) {
		// Anonymous (or a credential of no kind cove issues): names do not
		// resolve, and no question goes to the server.
		return Target{}, false, "", nil
	}
	for _, id := range nr.Named(ctx, rt.envRef) {
		if p.cache.isNotOwner(id, rt.port, tok) {
			continue
		}
		t, err := p.cfg.Resolver.Resolve(ctx, id)
		if err != nil {
			continue // stopped meanwhile
		}
		allowed, userID, err := p.decide(ctx, t.EnvID, rt.port, tok)
		if err != nil {
			return Target{}, false, "", err
		}
		if allowed && userID != "" && userID == t.OwnerID {
			return t, true, userID, nil
		}
		p.cache.putNotOwner(t.EnvID, rt.port, tok)
	}
	return Target{}, false, "", nil
}

// decide asks the server (or the cache) whether tok may reach port of
// environment envID, and as whom.
func (p *proxy) decide(ctx context.Context, envID string, port int, tok string) (allowed bool, userID string, err error) {
	if allowed, userID, ok := p.cache.get(envID, port, tok); ok {
		return allowed, userID, nil
	}
	var cacheFor time.Duration
	allowed, userID, cacheFor, err = p.cfg.Authorizer.Authorize(ctx, envID, port, tok)
	if err != nil {
		p.log.Error("port proxy: authorize", "env", envID, "port", port, "err", err)
		return false, "", err
	}
	p.log.Debug("port proxy: authorized", "env", envID, "port", port, "allowed", allowed, "user", userID)
	p.cache.put(envID, port, tok, allowed, userID, cacheFor)
	return allowed, userID, nil
}

// isCoveCredential reports whether tok looks like a credential cove
// issues (the server decides whether it is one).
func isCoveCredential(tok string) bool {
	return strings.HasPrefix(tok, prefixPAT) || strings.HasPrefix(tok, prefixPort)
}
