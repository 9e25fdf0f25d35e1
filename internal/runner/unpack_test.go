package runner

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"

	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
)

// unpackChildCgroupEnv names the file the test binary, run as the
// unpacker's child, records its cgroups in.
const unpackChildCgroupEnv = "COVE_TEST_UNPACK_CGROUP_FILE"

// unpackChildKillEnv makes the unpacker's child kill itself with SIGKILL.
const unpackChildKillEnv = "COVE_TEST_UNPACK_SIGKILL"

// TestMain lets the test binary be the unpacker's child, as the cove
// binary is for the runner: `<test binary> internal-unpack-layer DIR`.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "internal-unpack-layer" {
		in := bufio.NewReader(os.Stdin)
		if f := os.Getenv(unpackChildCgroupEnv); f != "" {
			// Where the child is when its first byte arrives: the runner
			// moves it into the work cgroup before it sends any, and
			// before that it may still be where it was started.
			_, _ = in.Peek(1)
			b, _ := os.ReadFile("/proc/self/cgroup")
			_ = os.WriteFile(f, b, 0o600)
		}
		if os.Getenv(unpackChildKillEnv) != "" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		diff, err := image.UnpackLayer(context.Background(), os.Args[2], in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cove:", err)
			os.Exit(1)
		}
		fmt.Println(diff.String())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// layerBlob is a gzip layer of files and its diff id.
func layerBlob(t *testing.T, files map[string]string) ([]byte, string) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tb.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(sum[:])
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestUnpackInLimitedCgroup: a layer is unpacked by a child process that
// runs in the unpack work cgroup from its first byte; the cgroup is gone
// once no unpack runs. A hostile layer and a blob that fails mid-stream
// give their own errors, and nothing escapes the target.
func TestUnpackInLimitedCgroup(t *testing.T) {
	testutil.RequireRoot(t, "it makes cgroups")
	parent := fmt.Sprintf("cove-test-unpack-%d", os.Getpid())
	t.Cleanup(func() { _ = resources.Remove(context.Background(), resources.CgroupPath(parent, "")) })
	record := filepath.Join(t.TempDir(), "cgroup")
	t.Setenv(unpackChildCgroupEnv, record)
	unpack := limitedUnpacker(slog.New(slog.DiscardHandler), os.Args[0], parent, t.TempDir(),
		WorkLimits{CPUMillis: 500, MemoryBytes: 256 << 20, Pids: 64})
	ctx := testutil.Context(t)

	blob, diff := layerBlob(t, map[string]string{"hello": "world"})
	dir := t.TempDir()
	got, err := unpack(ctx, dir, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != diff {
		t.Errorf("diff id %s, want %s", got, diff)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello")); err != nil || string(b) != "world" {
		t.Errorf("unpacked file: %q, %v", b, err)
	}
	cg, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := resources.WorkCgroupPath(parent, unpackWork)
	// The hierarchy that holds the cpu controller: v2's, or v1's cpu.
	found := false
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 || (cgroups.Mode() == cgroups.Unified) != (f[1] == "") || (f[1] != "" && !slices.Contains(strings.Split(f[1], ","), "cpu")) {
			continue
		}
		found = true
		if f[2] != want {
			t.Errorf("unpacker's cgroup %q, want %s", l, want)
		}
	}
	if !found {
		t.Errorf("no cpu cgroup in the unpacker's /proc/self/cgroup:\n%s", cg)
	}
	if resources.Exists(want) {
		t.Errorf("work cgroup %s left after the unpack", want)
	}

	// A layer that writes outside its directory.
	outside := t.TempDir()
	evil, _ := layerBlob(t, map[string]string{"../" + filepath.Base(outside) + "/pwned": "x"})
	into := filepath.Join(outside, "layer")
	if err := os.Mkdir(into, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := unpack(ctx, into, bytes.NewReader(evil)); err == nil {
		t.Fatal("escaping layer unpacked")
	}
	if _, err := os.Lstat(filepath.Join(outside, "pwned")); !os.IsNotExist(err) {
		t.Fatalf("escaping entry written: %v", err)
	}

	// A blob that fails mid-stream (a digest mismatch, a dropped
	// connection): its error is the one reported.
	cause := errors.New("blob digest mismatch")
	_, err = unpack(ctx, t.TempDir(), &failingReader{r: bytes.NewReader(blob[:len(blob)/2]), err: cause})
	if !errors.Is(err, cause) {
		t.Fatalf("blob failure: %v, want %v", err, cause)
	}
	if resources.Exists(want) {
		t.Errorf("work cgroup %s left after failed unpacks", want)
	}
}

// TestUnpackKilledSaysSo: an unpacker killed by SIGKILL (what the
// kernel's OOM killer sends in the unpack work cgroup) is reported as
// likely out of memory, naming the flag to raise.
func TestUnpackKilledSaysSo(t *testing.T) {
	testutil.RequireRoot(t, "it makes cgroups")
	parent := fmt.Sprintf("cove-test-unpack-kill-%d", os.Getpid())
	t.Cleanup(func() { _ = resources.Remove(context.Background(), resources.CgroupPath(parent, "")) })
	t.Setenv(unpackChildKillEnv, "1")
	unpack := limitedUnpacker(slog.New(slog.DiscardHandler), os.Args[0], parent, t.TempDir(), WorkLimits{MemoryBytes: 256 << 20})
	blob, _ := layerBlob(t, map[string]string{"f": "x"})
	_, err := unpack(testutil.Context(t), t.TempDir(), bytes.NewReader(blob))
	if err == nil || !strings.Contains(err.Error(), "--unpack-memory") {
		t.Fatalf("killed unpacker: %v", err)
	}
}
