package backuprepo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// Object kinds, the fifth byte of a sealed object.
const (
	kindChunk    byte = 'c'
	kindManifest byte = 'm'
)

const (
	magic     = "CVB1"
	headerLen = len(magic) + 1 + 8
	// MaxPayload bounds the plaintext of any object (a chunk, a manifest
	// piece or a manifest root): what a reader decompresses into memory.
	MaxPayload = MaxChunkSize
	// maxSealed bounds a sealed object's size: the payload, zstd's worst
	// case framing of incompressible data, the header, nonce and tag.
	maxSealed = MaxPayload + MaxPayload/64 + 1024
	// minSealed is less than any sealed object: the header, an
	// XChaCha20 nonce and a Poly1305 tag around an empty payload.
	minSealed = headerLen + 24 + 16
)

// The plaintext under the AEAD is the payload's encoding: a zstd frame
// (magic 28 b5 2f fd; every object cove wrote before this variant was one),
// or storedRaw followed by the payload as is, for content zstd would not
// shrink by minSaving (already compressed files, random data). The marker
// is encrypted and authenticated with the rest, so it cannot be changed
// without the key, and reveals nothing in the bucket.
const (
	storedRaw byte = 0x00 // never the first byte of a zstd frame
	// minSaving: the payload is stored as is unless compressed it is at
	// least 1/minSaving (about 3%) smaller.
	minSaving = 32
)

// encoding is how seal encodes a payload (a test forces one).
type encoding int

const (
	encodeAuto encoding = iota // zstd, or stored when it saves less than minSaving
	encodeZstd                 // always zstd (objects before the stored variant)
	encodeRaw                  // always stored
)

var (
	// SpeedFastest (zstd level 1): against SpeedDefault on bench/backup's
	// data set it spends about a third less CPU for 3% more bytes stored
	// (docs/performance.md, "Full backup reading ahead").
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxPayload), zstd.WithDecoderMaxWindow(MaxPayload))
)

// seal compresses (when that pays) and encrypts payload as an object of
// kind named name.
func (k *Key) seal(kind byte, name string, payload []byte) ([]byte, error) {
	return k.sealAs(kind, name, payload, encodeAuto)
}

func (k *Key) sealAs(kind byte, name string, payload []byte, enc encoding) ([]byte, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("seal %s: %d bytes, more than %d", name, len(payload), MaxPayload)
	}
	aead, err := chacha20poly1305.NewX(k.aead[:])
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", name, err)
	}
	// One buffer: the header and nonce, the encoded payload after them,
	// encrypted in place.
	prefix := headerLen + aead.NonceSize()
	out := make([]byte, prefix, prefix+len(payload)+len(payload)/64+64+aead.Overhead())
	if enc != encodeRaw {
		out = encoder.EncodeAll(payload, out)
	}
	if enc == encodeRaw || (enc == encodeAuto && len(out)-prefix > len(payload)-len(payload)/minSaving) {
		out = append(append(out[:prefix], storedRaw), payload...)
	}
	copy(out, magic)
	out[len(magic)] = kind
	copy(out[len(magic)+1:], k.keyID[:])
	nonce := out[headerLen:prefix]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %s: nonce: %w", name, err)
	}
	return aead.Seal(out[:prefix], nonce, out[prefix:], associated(out[:headerLen], name)), nil
}

func associated(header []byte, name string) []byte {
	ad := make([]byte, 0, len(header)+len(name))
	return append(append(ad, header...), name...)
}

// open authenticates, decrypts and decompresses a sealed object of kind
// named name. Any failure is ErrCorrupt (or ErrWrongKey) naming the object.
func (k *Key) open(kind byte, name string, sealed []byte) ([]byte, error) {
	corrupt := func(why string) error { return fmt.Errorf("%s: %s: %w", name, why, ErrCorrupt) }
	if len(sealed) < headerLen+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, corrupt(fmt.Sprintf("%d bytes, too short for a sealed object", len(sealed)))
	}
	if len(sealed) > maxSealed {
		return nil, corrupt(fmt.Sprintf("%d bytes, more than %d", len(sealed), maxSealed))
	}
	if string(sealed[:len(magic)]) != magic {
		return nil, corrupt("not a cove backup object (unknown format)")
	}
	if sealed[len(magic)] != kind {
		return nil, corrupt(fmt.Sprintf("object of kind %q where %q was expected", sealed[len(magic)], kind))
	}
	if !bytes.Equal(sealed[len(magic)+1:headerLen], k.keyID[:]) {
		return nil, fmt.Errorf("%s: sealed with key %x, this organization's key is %s: %w",
			name, sealed[len(magic)+1:headerLen], k.ID(), ErrWrongKey)
	}
	aead, err := chacha20poly1305.NewX(k.aead[:])
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	nonce := sealed[headerLen : headerLen+aead.NonceSize()]
	plain, err := aead.Open(nil, nonce, sealed[headerLen+aead.NonceSize():], associated(sealed[:headerLen], name))
	if err != nil {
		return nil, corrupt("authentication failed (modified, truncated or stored under another name)")
	}
	if len(plain) > 0 && plain[0] == storedRaw {
		if len(plain)-1 > MaxPayload {
			return nil, corrupt(fmt.Sprintf("%d bytes stored, more than %d", len(plain)-1, MaxPayload))
		}
		return plain[1:], nil
	}
	payload, err := decoder.DecodeAll(plain, nil)
	if err != nil {
		return nil, corrupt(fmt.Sprintf("decompress: %v", err))
	}
	if len(payload) > MaxPayload {
		return nil, corrupt(fmt.Sprintf("%d bytes once decompressed, more than %d", len(payload), MaxPayload))
	}
	return payload, nil
}

// readSealed reads a whole sealed object from r, refusing more than
// maxSealed bytes.
func readSealed(name string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSealed+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxSealed {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", name, maxSealed, ErrCorrupt)
	}
	return b, nil
}
