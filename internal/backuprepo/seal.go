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

var (
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxPayload), zstd.WithDecoderMaxWindow(MaxPayload))
)

// seal compresses and encrypts payload as an object of kind named name.
func (k *Key) seal(kind byte, name string, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("seal %s: %d bytes, more than %d", name, len(payload), MaxPayload)
	}
	aead, err := chacha20poly1305.NewX(k.aead[:])
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", name, err)
	}
	compressed := encoder.EncodeAll(payload, nil)
	out := make([]byte, headerLen+aead.NonceSize(), headerLen+aead.NonceSize()+len(compressed)+aead.Overhead())
	copy(out, magic)
	out[len(magic)] = kind
	copy(out[len(magic)+1:], k.keyID[:])
	nonce := out[headerLen:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %s: nonce: %w", name, err)
	}
	return aead.Seal(out, nonce, compressed, associated(out[:headerLen], name)), nil
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
	compressed, err := aead.Open(nil, nonce, sealed[headerLen+aead.NonceSize():], associated(sealed[:headerLen], name))
	if err != nil {
		return nil, corrupt("authentication failed (modified, truncated or stored under another name)")
	}
	payload, err := decoder.DecodeAll(compressed, nil)
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
