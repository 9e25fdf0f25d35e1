package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
)

// testConcurrentPuts: writers race on one key while readers read it;
// every read sees one writer's whole object, and the last state is one
// writer's whole object.
func testConcurrentPuts(t *testing.T, s blob.Store, opts Options) {
	const writers = 4
	size := opts.LargeSize
	ctx := testutil.Context(t)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// Each writer's object is its own byte, repeated.
			data := bytes.Repeat([]byte{byte('a' + i)}, int(size))
			if err := s.Put(ctx, "race", bytes.NewReader(data), size); err != nil {
				errs <- fmt.Errorf("writer %d: %w", i, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	whole := func(b []byte) error {
		if int64(len(b)) != size {
			return fmt.Errorf("torn object: %d bytes, want %d", len(b), size)
		}
		if c := b[0]; c < 'a' || c >= 'a'+writers || bytes.Count(b, []byte{c}) != len(b) {
			return fmt.Errorf("torn object: mixes writers' bytes")
		}
		return nil
	}
	reads := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		b, err := read(ctx, s, "race", blob.Range{})
		if blob.IsNotFound(err) {
			continue // no writer finished yet
		}
		if err != nil {
			t.Fatalf("read during writes: %v", err)
		}
		reads++
		if err := whole(b); err != nil {
			t.Fatalf("read during writes: %v", err)
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := whole(Read(t, s, "race", blob.Range{})); err != nil {
		t.Errorf("after the writes: %v", err)
	}
	t.Logf("%d whole reads while writing", reads)
}

// cancelAfter is a reader of n bytes that cancels its context once it has
// yielded first bytes, as a caller that gives up in the middle of a Put.
type cancelAfter struct {
	r      io.Reader
	first  int64
	read   int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.read >= c.first {
		c.cancel()
	}
	n, err := c.r.Read(p[:min(int64(len(p)), max(c.first-c.read, 1))])
	c.read += int64(n)
	return n, err
}

// testCancelMidPut: a Put whose context ends in the middle leaves no
// object, and leaves an older object at the key as it was.
func testCancelMidPut(t *testing.T, s blob.Store, opts Options) {
	old := []byte("the previous version")
	Put(t, s, "c/kept", old)
	for _, tc := range []struct {
		name        string
		size, first int64
	}{
		{"small", 1000, 10},
		{"large", opts.LargeSize, opts.LargeSize * 3 / 4}, // after a part or two
	} {
		for _, key := range []string{"c/new", "c/kept"} {
			t.Run(tc.name+"/"+key, func(t *testing.T) {
				ctx, cancel := context.WithCancel(testutil.Context(t))
				defer cancel()
				r := &cancelAfter{r: bytes.NewReader(random(tc.size, 6)), first: tc.first, cancel: cancel}
				err := s.Put(ctx, key, r, tc.size)
				if !errors.Is(err, context.Canceled) || !errdefs.Is(err, errdefs.CategoryCanceled) {
					t.Fatalf("put = %v; want context.Canceled", err)
				}
				if key == "c/new" {
					MustBeMissing(t, s, key)
				} else {
					equal(t, "the previous version", Read(t, s, key, blob.Range{}), old)
				}
			})
		}
	}
	if got := Keys(t, s, "c/"); len(got) != 1 {
		t.Errorf("objects after cancelled puts: %q; want only c/kept", got)
	}
}

// testSizeMismatch: a reader that yields fewer or more bytes than the size
// given stores nothing.
func testSizeMismatch(t *testing.T, s blob.Store, opts Options) {
	old := []byte("old")
	Put(t, s, "m/kept", old)
	ctx := testutil.Context(t)
	for _, tc := range []struct{ size, actual int64 }{
		{10, 5}, {10, 11}, {0, 1}, {1, 0},
		{opts.LargeSize, opts.LargeSize - 1}, {opts.LargeSize, opts.LargeSize + 1},
		{opts.LargeSize - 1, opts.LargeSize}, {opts.LargeSize / 3, opts.LargeSize},
	} {
		for _, key := range []string{"m/new", "m/kept"} {
			err := s.Put(ctx, key, bytes.NewReader(random(tc.actual, 7)), tc.size)
			if !errors.Is(err, blob.ErrSizeMismatch) || !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
				t.Errorf("put %s of %d bytes said to be %d: %v; want ErrSizeMismatch", key, tc.actual, tc.size, err)
			}
		}
		MustBeMissing(t, s, "m/new")
		equal(t, "the previous version", Read(t, s, "m/kept", blob.Range{}), old)
	}
}

type failingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	n, err := f.r.Read(p[:min(int64(len(p)), f.n)])
	f.n -= int64(n)
	return n, err
}

// testReaderError: a reader that fails stores nothing, and the Put's error
// carries the reader's.
func testReaderError(t *testing.T, s blob.Store, opts Options) {
	boom := errors.New("disk read error in the source")
	for _, at := range []int64{0, 100, opts.LargeSize * 3 / 4} {
		r := &failingReader{r: bytes.NewReader(random(opts.LargeSize, 8)), n: at, err: boom}
		err := s.Put(testutil.Context(t), "e/x", r, blob.UnknownSize)
		if !errors.Is(err, boom) {
			t.Errorf("put failing after %d bytes: %v; want the reader's error", at, err)
		}
		MustBeMissing(t, s, "e/x")
	}
}

// BadKeys are keys every Store refuses.
var BadKeys = []string{
	"", "/", "/abs", "abs/", "a//b", ".", "..", "../x", "a/../b", "a/./b", "./a",
	".tmp/x", ".hidden", "a/.hidden", "-a", "_a", "with space", "tab\tkey", "nl\nkey",
	"nul\x00key", "back\\slash", "ü", "a:b", "a?b", "a%2e", "a*",
	strings.Repeat("k", blob.MaxKeyLen+1),
	strings.Repeat("s", 201),
}

// testInvalidKeys: every method refuses bad keys (InvalidArgument) before
// touching storage.
func testInvalidKeys(t *testing.T, s blob.Store, _ Options) {
	ctx := testutil.Context(t)
	Put(t, s, "ok", []byte("x"))
	for _, key := range BadKeys {
		checks := map[string]error{
			"put":    s.Put(ctx, key, strings.NewReader("x"), 1),
			"delete": s.Delete(ctx, key),
		}
		_, checks["get"] = s.Get(ctx, key, blob.Range{})
		_, checks["stat"] = s.Stat(ctx, key)
		for op, err := range checks {
			if !errdefs.Is(err, errdefs.CategoryInvalidArgument) || errdefs.Retryable(err) {
				t.Errorf("%s %q: %v; want invalid argument", op, key, err)
			}
		}
	}
	if got := Keys(t, s, ""); len(got) != 1 || got[0] != "ok" {
		t.Errorf("objects after bad puts: %q", got)
	}
}
