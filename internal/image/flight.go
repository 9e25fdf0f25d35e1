package image

import (
	"context"
	"sync"
)

// flights runs one pull per key at a time and shares its result with every
// caller asking meanwhile. Unlike singleflight, the work is cancelled only
// when every caller waiting for it has given up.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	cancel  context.CancelFunc
	waiters int
	done    chan struct{}
	img     *Image
	err     error
}

func (f *flights) do(ctx context.Context, key string, fn func(context.Context) (*Image, error)) (*Image, error) {
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*flight{}
	}
	fl, ok := f.m[key]
	if !ok {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		fl = &flight{cancel: cancel, done: make(chan struct{})}
		f.m[key] = fl
		go func() {
			fl.img, fl.err = fn(fctx)
			cancel()
			f.mu.Lock()
			if f.m[key] == fl {
				delete(f.m, key)
			}
			f.mu.Unlock()
			close(fl.done)
		}()
	}
	fl.waiters++
	f.mu.Unlock()

	select {
	case <-fl.done:
		return fl.img, fl.err
	case <-ctx.Done():
		f.mu.Lock()
		fl.waiters--
		if fl.waiters == 0 {
			fl.cancel()
			if f.m[key] == fl {
				delete(f.m, key) // new callers start afresh
			}
		}
		f.mu.Unlock()
		return nil, ctx.Err()
	}
}
