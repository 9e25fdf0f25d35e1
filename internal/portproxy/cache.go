package portproxy

import (
	"crypto/sha256"
	"sync"
	"time"
)

// decisionCache remembers Authorize answers per (environment, port,
// token), and which tokens are not their owner's for environments reached
// by name.
type decisionCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[cacheKey]cacheEntry
	// notOwner: the token's user (if any) does not own the environment.
	// Ownership never changes and a token that does not prove it never
	// will (port tokens are bound to one environment and port), so the
	// answer is kept longer than access decisions.
	notOwner map[cacheKey]time.Time
}

type cacheKey struct {
	env   string
	port  int
	token [32]byte
}

type cacheEntry struct {
	allowed bool
	userID  string
	until   time.Time
}

const (
	maxCacheEntries = 10000
	notOwnerFor     = 10 * time.Minute
)

func newDecisionCache(now func() time.Time) *decisionCache {
	return &decisionCache{now: now, m: map[cacheKey]cacheEntry{}, notOwner: map[cacheKey]time.Time{}}
}

func (c *decisionCache) key(env string, port int, tok string) cacheKey {
	return cacheKey{env: env, port: port, token: sha256.Sum256([]byte(tok))}
}

func (c *decisionCache) get(env string, port int, tok string) (allowed bool, userID string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[c.key(env, port, tok)]
	if !ok || !c.now().Before(e.until) {
		return false, "", false
	}
	return e.allowed, e.userID, true
}

func (c *decisionCache) put(env string, port int, tok string, allowed bool, userID string, d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	prune(c.m, func(e cacheEntry) bool { return !now.Before(e.until) })
	c.m[c.key(env, port, tok)] = cacheEntry{allowed: allowed, userID: userID, until: now.Add(d)}
}

func (c *decisionCache) isNotOwner(env string, port int, tok string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.notOwner[c.key(env, port, tok)]
	return ok && c.now().Before(until)
}

func (c *decisionCache) putNotOwner(env string, port int, tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	prune(c.notOwner, func(until time.Time) bool { return !now.Before(until) })
	c.notOwner[c.key(env, port, tok)] = now.Add(notOwnerFor)
}

// prune keeps m below maxCacheEntries: expired entries go first, then
// everything (a flood of distinct tokens only costs cache misses).
func prune[V any](m map[cacheKey]V, expired func(V) bool) {
	if len(m) < maxCacheEntries {
		return
	}
	for k, v := range m {
		if expired(v) {
			delete(m, k)
		}
	}
	if len(m) >= maxCacheEntries {
		clear(m)
	}
}
