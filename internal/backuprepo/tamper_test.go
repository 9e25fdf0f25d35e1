package backuprepo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// fileEntry returns the entry of path in backup name.
func fileEntry(t *testing.T, r *Repo, name, path string) *Entry {
	t.Helper()
	for _, e := range readAll(t, r, name) {
		if e.Path == path {
			return e
		}
	}
	t.Fatalf("no %q in backup %s", path, name)
	return nil
}

func chunkFile(dir string, id ChunkID) string {
	return filepath.Join(dir, filepath.FromSlash(id.key()))
}

func TestFlippedByteDetected(t *testing.T) {
	ctx := context.Background()
	s, dir := newLocal(t)
	r := unpacked(s, testKey(t, 1))
	items := tree()
	backup(t, r, "b", items, "")
	e := fileEntry(t, r, "b", "bin/tool")
	ref := e.Chunks[1]
	path := chunkFile(dir, ref.ID)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker with write access to the bucket flips one bit: in the
	// header's kind, the nonce, the ciphertext and the tag.
	for _, at := range []int{len(magic), headerLen + 3, len(orig) / 2, len(orig) - 1} {
		mod := bytes.Clone(orig)
		mod[at] ^= 0x01
		if err := os.WriteFile(path, mod, 0o600); err != nil {
			t.Fatal(err)
		}
		data, err := r.GetChunk(ctx, ref)
		if !IsCorrupt(err) || data != nil {
			t.Errorf("byte %d of %d flipped: %d bytes, %v; want nothing and a corruption error", at, len(orig), len(data), err)
		}
		if !errdefs.Is(err, errdefs.CategoryFailedPrecondition) || !strings.Contains(err.Error(), ref.ID.String()) {
			t.Errorf("byte %d flipped: error %q: want FailedPrecondition naming the chunk", at, err)
		}
		var out bytes.Buffer
		err = r.ReadFile(ctx, e, &out)
		if !IsCorrupt(err) || !strings.Contains(err.Error(), `"bin/tool"`) {
			t.Errorf("restoring the file with byte %d flipped: %v; want an error naming bin/tool", at, err)
		}
		if out.Len() != int(e.Chunks[0].Size) {
			t.Errorf("restore wrote %d bytes: want the %d of the good first chunk and nothing of the bad one", out.Len(), e.Chunks[0].Size)
		}
	}
	// Truncated.
	if err := os.WriteFile(path, orig[:len(orig)-7], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetChunk(ctx, ref); !IsCorrupt(err) {
		t.Errorf("truncated chunk: %v", err)
	}
}

func TestSwappedObjectsDetected(t *testing.T) {
	ctx := context.Background()
	s, dir := newLocal(t)
	r := unpacked(s, testKey(t, 1))
	backup(t, r, "b", tree(), "")
	a := fileEntry(t, r, "b", "src/main.go").Chunks[0]
	b := fileEntry(t, r, "b", ".bashrc").Chunks[0]
	// The bucket's writer puts chunk a's (valid, sealed) object under b's
	// name: b's readers must not get a's content.
	sealedA, err := os.ReadFile(chunkFile(dir, a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chunkFile(dir, b.ID), sealedA, 0o600); err != nil {
		t.Fatal(err)
	}
	b.Size = 0 // not even the size tells
	if data, err := r.GetChunk(ctx, b); !IsCorrupt(err) || data != nil {
		t.Errorf("chunk swapped under another id: %q, %v; want a corruption error", data, err)
	}

	// A backup's manifest put under another backup's name, or a chunk put
	// as a manifest: refused.
	backup(t, r, "old", tree()[:3], "")
	old, err := os.ReadFile(filepath.Join(dir, "manifests", "old"))
	if err != nil {
		t.Fatal(err)
	}
	for what, content := range map[string][]byte{"another backup's manifest": old, "a chunk": sealedA} {
		if err := os.WriteFile(filepath.Join(dir, "manifests", "b"), content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := r.OpenManifest(ctx, "b"); !IsCorrupt(err) {
			t.Errorf("%s in place of backup b's manifest: %v; want a corruption error", what, err)
		}
	}
}

func TestWrongKeyRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	backup(t, New(s, testKey(t, 1), nil), "b", tree(), "")
	other := New(s, testKey(t, 2), nil)
	_, err := other.OpenManifest(ctx, "b")
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), testKey(t, 1).ID()) || !strings.Contains(err.Error(), testKey(t, 2).ID()) {
		t.Errorf("manifest read with another organization's key: %v; want ErrWrongKey naming both keys", err)
	}
	for _, k := range keys(t, s, "chunks/") {
		id, err := ParseChunkID(k[strings.LastIndexByte(k, '/')+1:])
		if err != nil {
			t.Fatal(err)
		}
		if data, err := other.GetChunk(ctx, ChunkRef{ID: id}); !errors.Is(err, ErrWrongKey) || data != nil {
			t.Errorf("chunk %s read with another key: %d bytes, %v", id, len(data), err)
		}
	}

	// Someone who forges the key id in the header but not the key gets
	// nothing past authentication.
	forger := testKey(t, 3)
	forger.keyID = testKey(t, 1).keyID
	sealed, err := forger.seal(kindManifest, manifestKey("b"), []byte(`{"version":1,"name":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, manifestKey("b"), bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		t.Fatal(err)
	}
	if _, err := New(s, testKey(t, 1), nil).OpenManifest(ctx, "b"); !IsCorrupt(err) {
		t.Errorf("manifest forged without the key: %v", err)
	}
}

func TestMissingChunkReportedWithItsFiles(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	r := unpacked(s, testKey(t, 1))
	items := tree()
	backup(t, r, "b", items, "")
	var files int64
	for _, it := range items {
		if it.e.Type == TypeFile {
			files++
		}
	}
	// .bashrc and src/main.go.copy share their only chunk.
	lost := fileEntry(t, r, "b", ".bashrc").Chunks[0]
	if err := s.Delete(ctx, lost.ID.key()); err != nil {
		t.Fatal(err)
	}
	for _, deep := range []bool{false, true} {
		rep, err := r.Check(ctx, "b", deep)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Complete || len(rep.Problems) != 1 || rep.Damaged != 2 {
			t.Fatalf("deep=%v: report %+v: want one problem affecting 2 files", deep, rep)
		}
		p := rep.Problems[0]
		if p.Chunk.ID != lost.ID || !blob.IsNotFound(p.Err) || strings.Join(p.Paths, ",") != ".bashrc,src/main.go.copy" {
			t.Errorf("deep=%v: problem %+v: want the lost chunk, not found, needed by .bashrc and src/main.go.copy", deep, p)
		}
		if rep.Files != files {
			t.Errorf("deep=%v: %d files checked, want %d", deep, rep.Files, files)
		}
		if msg := rep.Err().Error(); !strings.Contains(msg, ".bashrc") || !strings.Contains(msg, "src/main.go.copy") || !strings.Contains(msg, fmt.Sprintf("2 of %d files", files)) {
			t.Errorf("deep=%v: message %q does not name the files", deep, msg)
		}
	}
	// What can be restored is restored.
	for _, e := range readAll(t, r, "b") {
		if e.Type != TypeFile {
			continue
		}
		var buf bytes.Buffer
		err := r.ReadFile(ctx, e, &buf)
		needs := len(e.Chunks) > 0 && e.Chunks[0].ID == lost.ID
		if needs != (err != nil) {
			t.Errorf("%q: restore error %v (needs the lost chunk: %v)", e.Path, err, needs)
		}
		if needs && (!blob.IsNotFound(err) || !strings.Contains(err.Error(), e.Path)) {
			t.Errorf("%q: error %v: want not found naming the file", e.Path, err)
		}
	}
}

// sealRaw seals compressed as the (already compressed) body of an object:
// what a holder of the key could write.
func sealRaw(t testing.TB, k *Key, kind byte, name string, compressed []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(k.aead[:])
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(magic), kind)
	out = append(out, k.keyID[:]...)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, compressed, associated(out[:headerLen], name))
}

func TestDecompressionBombRefused(t *testing.T) {
	k := testKey(t, 1)
	// 64 times the largest payload, of zeros: a few KiB compressed.
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll(make([]byte, 64*MaxPayload), nil)
	name := strings.Repeat("0", 64)
	data, err := k.open(kindChunk, name, sealRaw(t, k, kindChunk, name, bomb))
	if !IsCorrupt(err) || data != nil {
		t.Errorf("decompression bomb: %d bytes, %v; want refused", len(data), err)
	}
}
