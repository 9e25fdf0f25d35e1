// Package backuprepo is the content store of cove's backups (issue 13): it
// cuts file contents into content-defined chunks, compresses them (zstd),
// encrypts and authenticates them (XChaCha20-Poly1305) under an
// organization's key, stores each distinct chunk once on a blob.Store, and
// writes and reads the manifests that list a backup's files. It knows
// nothing of environments or runners: the backup walker, restore into an
// environment and scheduling build on it.
//
// # Layout in the bucket
//
//	chunks/<id[:2]>/<id>   one sealed chunk; id = hex(BLAKE2b-256 keyed MAC of its plaintext)
//	manifests/<name>       one sealed manifest root, written last
//
// # Sealed objects
//
//	"CVB1" | kind (1 byte: 'c' chunk, 'm' manifest) | key id (8 bytes) | nonce (24 bytes) | XChaCha20-Poly1305(zstd(payload)) with its 16-byte tag
//
// The associated data is the 13-byte header followed by the object's name
// (the chunk id or the manifest name), so an object moved under another
// name, or a chunk passed off as a manifest, fails authentication. The
// nonce is random per object. After decryption a chunk's MAC is checked
// against its id.
//
// # Keys
//
// An organization key is 32 random bytes held by the server, never stored
// in the bucket. Sub-keys are derived with HKDF-SHA256 (salt
// "cove-backup-v1", info naming the use): the chunk-id MAC key, the AEAD
// key, the key of the chunker's gear table (so chunk boundaries, and thus
// chunk sizes, depend on the key and do not fingerprint known files), and
// a key id (8 bytes) written in every object header so that an object
// sealed under another organization's key is told apart from a tampered
// one.
package backuprepo

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/hkdf"

	"github.com/covedev/cove/internal/errdefs"
)

// KeySize is the size of an organization key.
const KeySize = 32

// Key holds an organization's key and the sub-keys derived from it. It is
// immutable and safe for concurrent use.
type Key struct {
	ids   [32]byte // keyed BLAKE3 key of chunk ids (manifest version 3 on)
	mac   [32]byte // BLAKE2b-256 key of chunk ids written before
	aead  [32]byte // XChaCha20-Poly1305 key
	gear  [32]byte // key of the chunker's gear table
	keyID [8]byte
}

// NewKey returns a new random organization key's bytes.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate backup key: %w", err)
	}
	return k, nil
}

// ParseKey derives the sub-keys of an organization key of KeySize bytes.
func ParseKey(org []byte) (*Key, error) {
	if len(org) != KeySize {
		return nil, errdefs.InvalidArgument(fmt.Errorf("backup key: %d bytes, want %d", len(org), KeySize))
	}
	var k Key
	for _, d := range []struct {
		info string
		dst  []byte
	}{
		{"chunk-id-blake3", k.ids[:]},
		{"chunk-id-mac", k.mac[:]},
		{"aead", k.aead[:]},
		{"chunker-gear", k.gear[:]},
		{"key-id", k.keyID[:]},
	} {
		r := hkdf.New(sha256.New, org, []byte("cove-backup-v1"), []byte(d.info))
		if _, err := io.ReadFull(r, d.dst); err != nil {
			return nil, fmt.Errorf("derive backup key %s: %w", d.info, err)
		}
	}
	return &k, nil
}

// ID returns the key's public identifier (hex), written in every object it
// seals. It reveals nothing about the key.
func (k *Key) ID() string { return hex.EncodeToString(k.keyID[:]) }

// ErrCorrupt is the cause of every error about an object whose content
// does not authenticate: tampered, truncated, swapped for another object,
// or not a cove backup object. Its category is FailedPrecondition
// (retrying does not help).
var ErrCorrupt = errdefs.FailedPrecondition(errors.New("backup object corrupt or tampered with"))

// ErrWrongKey is the cause of an error about an object sealed under
// another organization key (FailedPrecondition).
var ErrWrongKey = errdefs.FailedPrecondition(errors.New("backup object sealed with another key"))

// IsCorrupt reports whether err says an object failed authentication.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
