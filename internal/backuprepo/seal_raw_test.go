package backuprepo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// plaintextOf decrypts a sealed object with the key (what only a holder of
// the key sees): the payload's encoding under the AEAD.
func plaintextOf(t *testing.T, k *Key, name string, sealed []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(k.aead[:])
	if err != nil {
		t.Fatal(err)
	}
	prefix := headerLen + aead.NonceSize()
	plain, err := aead.Open(nil, sealed[headerLen:prefix], sealed[prefix:], associated(sealed[:headerLen], name))
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return plain
}

// TestIncompressibleChunkStoredRaw: a chunk zstd cannot shrink is stored
// as is (marked inside the encryption, no zstd framing around it) and
// reads back; a compressible one is still compressed.
func TestIncompressibleChunkStoredRaw(t *testing.T) {
	ctx := context.Background()
	s := newMem()
	r := New(s, testKey(t, 1), nil)
	random := randomBytes(1, 1<<20)
	text := []byte(strings.Repeat("func main() { fmt.Println(\"hello\") }\n", 1<<14))
	for _, c := range []struct {
		name    string
		data    []byte
		wantRaw bool
	}{{"random", random, true}, {"text", text, false}} {
		ref, stored, err := r.PutChunk(ctx, c.data)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sealed := s.m[ref.ID.key()]
		if int64(len(sealed)) != stored {
			t.Errorf("%s: %d bytes stored, reported %d", c.name, len(sealed), stored)
		}
		plain := plaintextOf(t, r.key, ref.ID.String(), sealed)
		overhead := headerLen + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
		if c.wantRaw {
			if plain[0] != storedRaw || !bytes.Equal(plain[1:], c.data) {
				t.Errorf("%s: not stored as is (first byte %#x, %d bytes)", c.name, plain[0], len(plain))
			}
			if len(sealed) != len(c.data)+1+overhead {
				t.Errorf("%s: %d bytes sealed, want the content and %d", c.name, len(sealed), 1+overhead)
			}
		} else {
			if !bytes.HasPrefix(plain, []byte{0x28, 0xb5, 0x2f, 0xfd}) || len(sealed) >= len(c.data)/2 {
				t.Errorf("%s: not compressed (%d bytes sealed of %d)", c.name, len(sealed), len(c.data))
			}
		}
		got, err := r.GetChunk(ctx, ref)
		if err != nil || !bytes.Equal(got, c.data) {
			t.Errorf("%s: read back: %d bytes, %v", c.name, len(got), err)
		}
	}
}

// TestZstdObjectStillOpens: objects written before the stored variant
// (every payload a zstd frame, incompressible ones included) still open.
func TestZstdObjectStillOpens(t *testing.T) {
	ctx := context.Background()
	s := newMem()
	r := New(s, testKey(t, 1), nil)
	for _, data := range [][]byte{randomBytes(2, 300<<10), []byte("small"), bytes.Repeat([]byte("ab"), 1<<20)} {
		id := r.ChunkIDOf(data)
		sealed, err := r.key.sealAs(kindChunk, id.String(), data, encodeZstd)
		if err != nil {
			t.Fatal(err)
		}
		if plain := plaintextOf(t, r.key, id.String(), sealed); !bytes.HasPrefix(plain, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			t.Fatalf("the old encoding is not a zstd frame: %x", plain[:4])
		}
		s.m[id.key()] = sealed
		got, err := r.GetChunk(ctx, ChunkRef{ID: id, Size: uint32(len(data))})
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("old object of %d bytes: %d bytes read, %v", len(data), len(got), err)
		}
	}
}

// TestStoredFlagTampered: someone with write access to the bucket but not
// the key flips the encoding marker (the first encrypted byte) of a raw
// object, or the first byte of a compressed one, to have the content read
// the other way: the object fails authentication and nothing is returned.
func TestStoredFlagTampered(t *testing.T) {
	k := testKey(t, 1)
	prefix := headerLen + chacha20poly1305.NonceSizeX
	for _, c := range []struct {
		name string
		enc  encoding
	}{{"stored", encodeRaw}, {"zstd", encodeZstd}} {
		data := randomBytes(3, 64<<10)
		sealed, err := k.sealAs(kindChunk, "n", data, c.enc)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := k.open(kindChunk, "n", sealed); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: untampered: %v", c.name, err)
		}
		for _, flip := range []byte{0x01, 0x28 ^ storedRaw, 0xff} {
			bad := bytes.Clone(sealed)
			bad[prefix] ^= flip
			got, err := k.open(kindChunk, "n", bad)
			if !IsCorrupt(err) || got != nil || !strings.Contains(err.Error(), "authentication failed") {
				t.Errorf("%s, marker byte ^%#x: %d bytes, %v; want refused as not authentic", c.name, flip, len(got), err)
			}
		}
	}
}

// TestStoredOversizeRefused: a body sealed with the key (a buggy or hostile
// writer) that claims to store more than MaxPayload as is is refused, like
// a decompression bomb.
func TestStoredOversizeRefused(t *testing.T) {
	k := testKey(t, 1)
	name := strings.Repeat("0", 64)
	body := append([]byte{storedRaw}, make([]byte, MaxPayload+1)...)
	data, err := k.open(kindChunk, name, sealRaw(t, k, kindChunk, name, body))
	if !IsCorrupt(err) || data != nil {
		t.Errorf("oversized stored payload: %d bytes, %v; want refused", len(data), err)
	}
	// The largest allowed one opens.
	body = append([]byte{storedRaw}, bytes.Repeat([]byte{7}, MaxPayload)...)
	if data, err := k.open(kindChunk, name, sealRaw(t, k, kindChunk, name, body)); err != nil || len(data) != MaxPayload {
		t.Errorf("largest stored payload: %d bytes, %v", len(data), err)
	}
}
