package confine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A hostile tree: symlinks to a directory outside (absolute and climbing
// out), a fifo and a device node where directories might be, deep
// nesting. The prefetch reads the tree, returns, and never opens or lists
// anything outside it, nor the fifo (which would block it).
func TestPrefetchStaysInTheTree(t *testing.T) {
	base := t.TempDir()
	tree, outside := filepath.Join(base, "tree"), filepath.Join(base, "outside")
	for _, d := range []string{tree, filepath.Join(outside, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deep := tree
	for i := range 40 {
		deep = filepath.Join(deep, fmt.Sprintf("d%d", i))
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(tree, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"abs": outside, "up": "../outside", "sub/in": "../../outside/sub"} {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(tree, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Who opens or lists the outside directories.
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	for _, d := range []string{outside, filepath.Join(outside, "sub")} {
		if _, err := unix.InotifyAddWatch(in, d, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := unix.InotifyAddWatch(in, filepath.Join(tree, "fifo"), unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}

	dir, err := OpenDir(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	p := startPrefetch(context.Background(), dir, 4)
	p.wg.Wait() // the workers end once the tree is read
	p.stop()
	// Every entry of the tree was lstat'ed: the top's 56 (d0, sub, 50
	// files, three symlinks... and the fifo), sub's one, and one per
	// level of the nesting (d1 to d39 below d0).
	if got, want := p.statted.Load(), int64(50+4+1+1+39); got != want {
		t.Errorf("%d entries lstat'ed, want %d", got, want)
	}

	buf := make([]byte, 4096)
	if n, _ := unix.Read(in, buf); n > 0 {
		t.Errorf("the prefetch opened or read something outside the tree, or the fifo (%d bytes of inotify events)", n)
	}
}

// While the prefetch runs, the tree's owner swaps a directory with a
// symlink out of the tree, over and over (RENAME_EXCHANGE): the prefetch
// never opens or lists the outside directory.
func TestPrefetchSymlinkSwapRace(t *testing.T) {
	base := t.TempDir()
	tree, outside := filepath.Join(base, "tree"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(tree, "a/b/c"), filepath.Join(outside, "x/y")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(tree, "a/link")); err != nil {
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	for _, d := range []string{outside, filepath.Join(outside, "x"), filepath.Join(outside, "x/y")} {
		if _, err := unix.InotifyAddWatch(in, d, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := OpenDir(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	done, first := make(chan struct{}), make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				swapped <- n
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, filepath.Join(tree, "a/b"), unix.AT_FDCWD, filepath.Join(tree, "a/link"), unix.RENAME_EXCHANGE) == nil {
				if n++; n == 1 {
					close(first)
				}
			}
		}
	}()
	<-first // the swapping is under way (not left to the scheduler)
	for range 300 {
		p := startPrefetch(context.Background(), dir, 4)
		p.wg.Wait()
		p.stop()
	}
	close(done)
	if n := <-swapped; n == 0 {
		t.Fatal("no swap happened")
	}
	buf := make([]byte, 4096)
	if n, _ := unix.Read(in, buf); n > 0 {
		t.Errorf("the prefetch opened or listed the directory outside the tree (%d bytes of inotify events)", n)
	}
}

// A stopped prefetch returns at once, also on a large tree.
func TestPrefetchStops(t *testing.T) {
	tree := t.TempDir()
	for i := range 200 {
		if err := os.MkdirAll(filepath.Join(tree, fmt.Sprintf("a%d/b/c", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := OpenDir(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stop := Prefetch(ctx, dir, 2)
	cancel()
	stop() // returns: every worker saw the cancel
}

// The prefetch stops itself on a tree whose metadata is in memory (its
// first lstats fast), and goes on while they are slow.
func TestPrefetchStopsOnAWarmTree(t *testing.T) {
	for _, tc := range []struct {
		perEntry time.Duration
		stops    bool
	}{{time.Microsecond, true}, {40 * time.Microsecond, false}} {
		ctx, cancel := context.WithCancel(context.Background())
		p := &prefetcher{ctx: ctx, cancel: cancel}
		for range 10 {
			p.sample(warmSample/8, warmSample/8*tc.perEntry)
		}
		if stopped := ctx.Err() != nil; stopped != tc.stops {
			t.Errorf("%v an lstat: stopped %v, want %v", tc.perEntry, stopped, tc.stops)
		}
		cancel()
	}
}
