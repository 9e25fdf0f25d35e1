// Package blobtest is the conformance suite every blob.Store passes: Run
// exercises each method with the edge cases backups depend on.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
)

// Options describe the store under test.
type Options struct {
	// LargeSize is the size of the "large" objects: more than the store's
	// multipart threshold (about two and a half parts is best), so that a
	// large Put takes the multipart path. 0 means 3 MiB.
	LargeSize int64
	// ListPage is the store's list page size, so that the listing test
	// spans several pages; 0 means the store does not page (25 keys then).
	ListPage int
}

// Run runs the suite; newStore returns an empty store, cleaned up by t.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store, opts Options) {
	if opts.LargeSize == 0 {
		opts.LargeSize = 3 << 20
	}
	tests := []struct {
		name string
		fn   func(*testing.T, blob.Store, Options)
	}{
		{"PutGet", testPutGet},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"Ranges", testRanges},
		{"Stat", testStat},
		{"List", testList},
		{"ListPrefix", testListPrefix},
		{"Delete", testDelete},
		{"ConcurrentPuts", testConcurrentPuts},
		{"CancelMidPut", testCancelMidPut},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderError", testReaderError},
		{"InvalidKeys", testInvalidKeys},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t), opts) })
	}
}

// random returns n reproducible pseudo-random bytes.
func random(n int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Put stores data, failing the test on error.
func Put(t testing.TB, s blob.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(testutil.Context(t), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Read returns the bytes rng selects of key, failing the test on error.
func Read(t testing.TB, s blob.Store, key string, rng blob.Range) []byte {
	t.Helper()
	b, err := read(testutil.Context(t), s, key, rng)
	if err != nil {
		t.Fatalf("get %s %+v: %v", key, rng, err)
	}
	return b
}

func read(ctx context.Context, s blob.Store, key string, rng blob.Range) ([]byte, error) {
	rc, err := s.Get(ctx, key, rng)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Keys lists the keys under prefix, failing the test on error.
func Keys(t testing.TB, s blob.Store, prefix string) []string {
	t.Helper()
	var keys []string
	for info, err := range s.List(testutil.Context(t), prefix) {
		if err != nil {
			t.Fatalf("list %q: %v", prefix, err)
		}
		keys = append(keys, info.Key)
	}
	return keys
}

// MustBeMissing fails the test unless key is absent from Stat, Get and
// List.
func MustBeMissing(t testing.TB, s blob.Store, key string) {
	t.Helper()
	ctx := testutil.Context(t)
	if info, err := s.Stat(ctx, key); !blob.IsNotFound(err) {
		t.Errorf("stat %s = %+v, %v; want not found", key, info, err)
	}
	if _, err := read(ctx, s, key, blob.Range{}); !blob.IsNotFound(err) || !errdefs.Is(err, errdefs.CategoryNotFound) {
		t.Errorf("get %s: %v; want not found", key, err)
	}
	if slices.Contains(Keys(t, s, ""), key) {
		t.Errorf("%s is listed", key)
	}
}

func equal(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)", what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

func testPutGet(t *testing.T, s blob.Store, _ Options) {
	data := random(1000, 1)
	Put(t, s, "a/b/c", data)
	equal(t, "get", Read(t, s, "a/b/c", blob.Range{}), data)
	// A Put replaces.
	data2 := random(77, 2)
	Put(t, s, "a/b/c", data2)
	equal(t, "get after overwrite", Read(t, s, "a/b/c", blob.Range{}), data2)
	// Unknown size.
	if err := s.Put(testutil.Context(t), "x", bytes.NewReader(data), blob.UnknownSize); err != nil {
		t.Fatal(err)
	}
	equal(t, "get of unknown-size put", Read(t, s, "x", blob.Range{}), data)
}

func testEmpty(t *testing.T, s blob.Store, _ Options) {
	Put(t, s, "empty", nil)
	if err := s.Put(testutil.Context(t), "empty2", strings.NewReader(""), blob.UnknownSize); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"empty", "empty2"} {
		if got := Read(t, s, key, blob.Range{}); len(got) != 0 {
			t.Errorf("%s: got %d bytes", key, len(got))
		}
		info, err := s.Stat(testutil.Context(t), key)
		if err != nil || info.Size != 0 || info.Key != key {
			t.Errorf("stat %s = %+v, %v", key, info, err)
		}
		if _, err := s.Get(testutil.Context(t), key, blob.Range{Offset: 0, Length: 1}); !errors.Is(err, blob.ErrRangeNotSatisfiable) {
			t.Errorf("range of an empty object: %v; want ErrRangeNotSatisfiable", err)
		}
	}
}

func testLarge(t *testing.T, s blob.Store, opts Options) {
	data := random(opts.LargeSize, 3)
	Put(t, s, "large/known", data)
	equal(t, "known size", Read(t, s, "large/known", blob.Range{}), data)
	if err := s.Put(testutil.Context(t), "large/unknown", io.MultiReader(bytes.NewReader(data)), blob.UnknownSize); err != nil {
		t.Fatal(err)
	}
	equal(t, "unknown size", Read(t, s, "large/unknown", blob.Range{}), data)
	info, err := s.Stat(testutil.Context(t), "large/unknown")
	if err != nil || info.Size != opts.LargeSize {
		t.Errorf("stat = %+v, %v; want size %d", info, err, opts.LargeSize)
	}
}

func testRanges(t *testing.T, s blob.Store, opts Options) {
	data := random(opts.LargeSize, 4)
	Put(t, s, "r", data)
	n := int64(len(data))
	half := n / 2
	for _, rng := range []blob.Range{
		{Offset: 0, Length: 1},              // first byte
		{Offset: n - 1, Length: 1},          // last byte
		{Offset: n - 1},                     // last byte, to the end
		{Offset: half},                      // second half
		{Offset: half - 1000, Length: 2000}, // across the middle (and a part boundary)
		{Offset: 0, Length: n},              // exactly all
	} {
		want := data[rng.Offset:]
		if rng.Length > 0 {
			want = want[:rng.Length]
		}
		equal(t, fmt.Sprintf("range %+v", rng), Read(t, s, "r", rng), want)
	}
	// Running past the end is cut at the end.
	equal(t, "past the end", Read(t, s, "r", blob.Range{Offset: n - 10, Length: 100}), data[n-10:])
	for _, rng := range []blob.Range{{Offset: n}, {Offset: n, Length: 1}, {Offset: n + 100}} {
		if _, err := read(testutil.Context(t), s, "r", rng); !errors.Is(err, blob.ErrRangeNotSatisfiable) || !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
			t.Errorf("range %+v of %d bytes: %v; want ErrRangeNotSatisfiable", rng, n, err)
		}
	}
	for _, rng := range []blob.Range{{Offset: -1}, {Length: -1}} {
		if _, err := s.Get(testutil.Context(t), "r", rng); !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
			t.Errorf("range %+v: %v; want invalid argument", rng, err)
		}
	}
	if _, err := s.Get(testutil.Context(t), "missing", blob.Range{Offset: 5}); !blob.IsNotFound(err) {
		t.Errorf("range of a missing object: %v; want not found", err)
	}
}

func testStat(t *testing.T, s blob.Store, _ Options) {
	ctx := testutil.Context(t)
	before := time.Now()
	Put(t, s, "s/one", random(123, 5))
	after := time.Now()
	info, err := s.Stat(ctx, "s/one")
	if err != nil {
		t.Fatal(err)
	}
	// The storage's clock may differ from ours a little, and may keep
	// only seconds.
	const skew = 5 * time.Minute
	if info.Key != "s/one" || info.Size != 123 || info.ModTime.Before(before.Add(-skew)) || info.ModTime.After(after.Add(skew)) {
		t.Errorf("stat = %+v; want s/one, 123 bytes, modified between %v and %v", info, before, after)
	}
	_, err = s.Stat(ctx, "s/two")
	if !blob.IsNotFound(err) || !errdefs.Is(err, errdefs.CategoryNotFound) || errdefs.Retryable(err) {
		t.Errorf("stat of a missing key: %v; want not found (not retryable)", err)
	}
	if !strings.Contains(fmt.Sprint(err), "s/two") {
		t.Errorf("the error does not name the key: %v", err)
	}
	// A "directory" of other objects is no object.
	if _, err := s.Stat(ctx, "s"); !blob.IsNotFound(err) {
		t.Errorf("stat of a prefix: %v; want not found", err)
	}
}

func testList(t *testing.T, s blob.Store, opts Options) {
	n := 25
	if opts.ListPage > 0 {
		n = opts.ListPage*2 + opts.ListPage/2 + 1
	}
	var want []string
	sizes := map[string]int64{}
	for i := range n {
		// Names that sort differently as paths and as strings: '-' and
		// '.' sort before '/'.
		key := fmt.Sprintf("l/%03d", i)
		switch i % 3 {
		case 1:
			key = fmt.Sprintf("l/%03d/x", i)
		case 2:
			key = fmt.Sprintf("l/%03d-y.z", i)
		}
		Put(t, s, key, random(int64(i), uint64(i)))
		want = append(want, key)
		sizes[key] = int64(i)
	}
	Put(t, s, "l/010-a", nil)
	Put(t, s, "l/010.a", nil)
	want = append(want, "l/010-a", "l/010.a")
	sizes["l/010-a"], sizes["l/010.a"] = 0, 0
	slices.Sort(want)
	var got []string
	for info, err := range s.List(testutil.Context(t), "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
		if info.Size != sizes[info.Key] || info.ModTime.IsZero() {
			t.Errorf("%s: size %d, modtime %v; want size %d and a modtime", info.Key, info.Size, info.ModTime, sizes[info.Key])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("list:\n got %q\nwant %q", got, want)
	}
	// Stopping early stops.
	count := 0
	for _, err := range s.List(testutil.Context(t), "l/") {
		if err != nil {
			t.Fatal(err)
		}
		if count++; count == 3 {
			break
		}
	}
	if count != 3 {
		t.Errorf("iteration stopped after %d, want 3", count)
	}
}

func testListPrefix(t *testing.T, s blob.Store, _ Options) {
	for _, key := range []string{"p/a", "p/ab/c", "p/ac/x", "p/ac/y/z", "p/b", "q/a", "pa"} {
		Put(t, s, key, []byte(key))
	}
	for prefix, want := range map[string][]string{
		"":         {"p/a", "p/ab/c", "p/ac/x", "p/ac/y/z", "p/b", "pa", "q/a"},
		"p/":       {"p/a", "p/ab/c", "p/ac/x", "p/ac/y/z", "p/b"},
		"p/a":      {"p/a", "p/ab/c", "p/ac/x", "p/ac/y/z"},
		"p/ac/":    {"p/ac/x", "p/ac/y/z"},
		"p/ac/y/z": {"p/ac/y/z"},
		"p/ac/y/":  {"p/ac/y/z"},
		"p":        {"p/a", "p/ab/c", "p/ac/x", "p/ac/y/z", "p/b", "pa"},
		"q/":       {"q/a"},
		"r":        nil,
		"p/c/":     nil,
		"p/a/":     nil,
	} {
		if got := Keys(t, s, prefix); !slices.Equal(got, want) {
			t.Errorf("list %q:\n got %q\nwant %q", prefix, got, want)
		}
	}
	for _, prefix := range []string{"/p", "../", "p//", "p/../q", ".tmp/"} {
		for _, err := range s.List(testutil.Context(t), prefix) {
			if !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
				t.Errorf("list %q: %v; want invalid argument", prefix, err)
			}
			break
		}
	}
}

func testDelete(t *testing.T, s blob.Store, _ Options) {
	ctx := testutil.Context(t)
	Put(t, s, "d/one", []byte("1"))
	Put(t, s, "d/two", []byte("2"))
	if err := s.Delete(ctx, "d/one"); err != nil {
		t.Fatal(err)
	}
	MustBeMissing(t, s, "d/one")
	equal(t, "the other object", Read(t, s, "d/two", blob.Range{}), []byte("2"))
	for _, key := range []string{"d/one", "d/never", "nowhere/at/all", "d"} {
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("delete of missing %s: %v", key, err)
		}
	}
	equal(t, "the other object", Read(t, s, "d/two", blob.Range{}), []byte("2"))
	// A deleted key can be written again.
	Put(t, s, "d/one", []byte("again"))
	equal(t, "rewritten", Read(t, s, "d/one", blob.Range{}), []byte("again"))
}
