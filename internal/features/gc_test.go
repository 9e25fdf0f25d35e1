package features

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestStaleCache: cached features unused since the cutoff and leftovers of
// crashed fetches are stale; a feature just used (MarkUsed) is not, however
// long ago it was fetched.
func TestStaleCache(t *testing.T) {
	cache := t.TempDir()
	now := time.Now()
	long := now.Add(-48 * time.Hour)
	mk := func(rel string, at time.Time) string {
		t.Helper()
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unused := mk("sha256/"+hex64('a'), long)
	used := mk("sha256/"+hex64('b'), long)
	fresh := mk("sha256/"+hex64('c'), now)
	crashed := mk("tmp/feature-123", long)
	inProgress := mk("tmp/feature-456", now)

	MarkUsed([]Feature{{Dir: used}})
	got, err := StaleCache(cache, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{unused, crashed}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stale = %v, want %v (not %s, %s, %s)", got, want, used, fresh, inProgress)
	}

	if got, err := StaleCache(filepath.Join(cache, "missing"), now); err != nil || len(got) != 0 {
		t.Errorf("missing cache: %v, %v", got, err)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
