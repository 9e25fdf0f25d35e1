package agentclient

import (
	"context"
	"errors"
	"sync"
)

var errDropped = errors.New("agent connection dropped while dialing")

// Pool keeps one connection per environment, keyed by environment id, and
// replaces a connection that has gone (the agent restarted, the
// environment was stopped) on the next Get.
type Pool struct {
	mu      sync.Mutex
	clients map[string]*poolEntry
}

type poolEntry struct {
	ready  chan struct{} // closed once the dial finished
	client *Client       // nil if the dial failed
	err    error
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{clients: map[string]*poolEntry{}}
}

// Get returns the connection to environment envID's agent, dialing ep if
// there is none or it has gone. Concurrent callers share one dial. The
// caller must not Close the client; Drop does.
func (p *Pool) Get(ctx context.Context, envID string, ep Endpoint) (*Client, error) {
	for {
		p.mu.Lock()
		e, ok := p.clients[envID]
		if ok {
			select {
			case <-e.ready:
				if e.client != nil && !isDone(e.client) {
					p.mu.Unlock()
					return e.client, nil
				}
				// Failed or gone: dial again below.
				delete(p.clients, envID)
				ok = false
			default:
			}
		}
		if ok {
			p.mu.Unlock()
			select {
			case <-e.ready:
				continue // re-check under the lock
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		e = &poolEntry{ready: make(chan struct{})}
		p.clients[envID] = e
		p.mu.Unlock()

		e.client, e.err = Dial(ctx, ep)
		close(e.ready)
		if e.err != nil {
			p.mu.Lock()
			if p.clients[envID] == e {
				delete(p.clients, envID)
			}
			p.mu.Unlock()
			return nil, e.err
		}
		p.mu.Lock()
		stale := p.clients[envID] != e // dropped while dialing
		p.mu.Unlock()
		if stale {
			e.client.Close()
			return nil, errDropped
		}
		return e.client, nil
	}
}

// Drop closes and forgets environment envID's connection, if any.
func (p *Pool) Drop(envID string) {
	p.mu.Lock()
	e, ok := p.clients[envID]
	delete(p.clients, envID)
	p.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		<-e.ready
		if e.client != nil {
			e.client.Close()
		}
	}()
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	ids := make([]string, 0, len(p.clients))
	for id := range p.clients {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for _, id := range ids {
		p.Drop(id)
	}
}

func isDone(c *Client) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
