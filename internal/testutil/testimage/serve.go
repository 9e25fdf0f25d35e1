package testimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Serve starts an in-memory registry on 127.0.0.1, pushes each image under
// its "repo:tag" name (for example "test/busybox:latest") and returns the
// registry's address "127.0.0.1:PORT". The registry stops when the test ends.
func Serve(t testing.TB, images map[string]v1.Image) string {
	t.Helper()
	srv := httptest.NewServer(newHandler())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	if err := push(context.Background(), addr, images); err != nil {
		t.Fatalf("testimage: %v", err)
	}
	return addr
}

// ServeOn serves an in-memory registry on ln (for example a listener on
// 127.0.0.1:0) holding images, for callers outside tests such as benchmarks.
// stop shuts the registry down and closes ln.
func ServeOn(ln net.Listener, images map[string]v1.Image) (stop func(), err error) {
	srv := &http.Server{Handler: newHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}
	if err := push(context.Background(), ln.Addr().String(), images); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

func newHandler() http.Handler {
	return registry.New(registry.Logger(log.New(io.Discard, "", 0)))
}

func push(ctx context.Context, addr string, images map[string]v1.Image) error {
	var errs []error
	for ref, img := range images {
		r, err := name.ParseReference(addr+"/"+ref, name.Insecure)
		if err != nil {
			errs = append(errs, fmt.Errorf("image name %q: %w", ref, err))
			continue
		}
		if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("push %s: %w", r, err))
		}
	}
	return errors.Join(errs...)
}
