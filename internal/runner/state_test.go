package runner

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/testutil"
)

// TestUnreadableStateKeepsRange is S5 of the 2026-12 review: an
// environment whose state file cannot be read (truncated by a full disk,
// say) may still run with its uid range; a restarted runner must never
// give that range to a new environment.
func TestUnreadableStateKeepsRange(t *testing.T) {
	testutil.RequireRoot(t, "the environment directory's group records its range")
	const base, size, slots = 1 << 24, 65536, 8
	dir := t.TempDir()
	r := &Runner{cfg: Config{DataDir: dir, RangeBase: base, RangeSize: size, RangeSlots: slots}, log: slog.New(slog.DiscardHandler),
		ranges: newRangeAllocator(base, size, slots)}
	mk := func(id string, m idmap.Range) envdir.Layout {
		lay := r.layout(id)
		if err := os.MkdirAll(lay.Dir, 0o711); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(envState{Header: envdir.Header{ID: id, IDMap: m}})
		if err := os.WriteFile(lay.State(), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := protectEnvDir(lay, &envState{Header: envdir.Header{IDMap: m}}); err != nil {
			t.Fatal(err)
		}
		return lay
	}
	first := idmap.Range{HostID: base, Size: size}
	victim := idmap.Range{HostID: base + size, Size: size}
	mk("ok", first)
	// The victim's state is corrupt; its directory still says its range.
	if err := os.WriteFile(mk("victim", victim).State(), []byte("{trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An older runner's directory without the group, but with a container
	// bundle (a container may run with the range).
	old := idmap.Range{HostID: base + 2*size, Size: size}
	oldLay := mk("old", old)
	if err := os.Chown(oldLay.Dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldLay.State(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(oldLay.Runtime(), "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	spec := `{"linux":{"uidMappings":[{"containerID":0,"hostID":` + jsonNum(old.HostID) + `,"size":65536}]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := r.loadRanges(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < slots-3; i++ {
		m, err := r.ranges.allocate("new")
		if err != nil {
			t.Fatal(err)
		}
		if m.HostID == victim.HostID || m.HostID == old.HostID || m.HostID == first.HostID {
			t.Fatalf("range %d of an environment still on disk handed out again", m.HostID)
		}
	}
}

func jsonNum(n uint32) string { b, _ := json.Marshal(n); return string(b) }

// TestCheckNoMountsSeesBindMounts: a bind (or idmapped) mount of the same
// file system below an environment's directory — a layer's view left by a
// runner that died halfway — must stop its removal, or RemoveAll would
// delete the shared layer through it.
func TestCheckNoMountsSeesBindMounts(t *testing.T) {
	testutil.RequireRoot(t, "mounts")
	layer, envDir := t.TempDir(), t.TempDir()
	view := filepath.Join(envDir, "l", "0")
	if err := os.MkdirAll(view, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkNoMounts(envDir); err != nil {
		t.Fatalf("nothing mounted: %v", err)
	}
	if err := syscall.Mount(layer, view, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(view, syscall.MNT_DETACH) })
	if err := checkNoMounts(envDir); err == nil || !strings.Contains(err.Error(), view) {
		t.Fatalf("bind mount of the same file system not seen: %v", err)
	}
}
