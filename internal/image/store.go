package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/singleflight"
)

// ErrNotFound is returned (wrapped) by Get for an image that was not
// pulled; its category is NotFound.
var ErrNotFound = errdefs.NotFound(errors.New("image not found"))

// Image is a pulled image whose layers are all unpacked in the store.
type Image struct {
	Ref    string   // as requested
	Digest string   // manifest digest "sha256:..."
	Layers []string // absolute dirs of unpacked layers, bottom first
	Config Config   // from the image config
}

// Config is the part of an image config an environment needs.
type Config struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	Labels     map[string]string
	// Healthcheck is the image's HEALTHCHECK (nil if it has none).
	Healthcheck *v1.HealthConfig
}

// Store is a content-addressed store of images and unpacked layers. One Store
// must own its root directory at a time.
type Store struct {
	root string
	log  *slog.Logger

	// policy says where pulls may connect; nil means hostfetch.Default().
	policy *hostfetch.Policy

	pulls  flights            // by normalized reference
	layers singleflight.Group // by diffID

	unpacker Unpacker // nil: UnpackLayer in this process

	indexMu sync.Mutex
}

// NewStore opens (creating if needed) the store rooted at root and discards
// any unfinished work left by a previous process.
func NewStore(root string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(root, "tmp")); err != nil {
		return nil, fmt.Errorf("image store: discard tmp: %w", err)
	}
	for _, d := range []string{"blobs/sha256", "layers/sha256", "shifted", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	// Layers must be traversable by environments' ids through the overlay.
	for _, d := range []string{".", "layers", "layers/sha256", "shifted"} {
		if err := os.Chmod(filepath.Join(root, d), 0o711); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	return &Store{root: root, log: log}, nil
}

// Get returns the image ref was last pulled as, without any network access.
// The error wraps ErrNotFound if it was not pulled or is incomplete.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	r, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	dgst, ok := idx[r.Name()]
	if !ok {
		return nil, fmt.Errorf("get image %q: %w", ref, ErrNotFound)
	}
	h, err := v1.NewHash(dgst)
	if err != nil {
		return nil, fmt.Errorf("get image %q: index: %w", ref, err)
	}
	return s.load(ref, h)
}

// LayersPresent reports whether every one of layers (directories such as
// Image.Layers lists, and layers stacked on them) is still there: false
// for an empty list, or once one was collected or removed.
func (s *Store) LayersPresent(layers []string) bool {
	if len(layers) == 0 {
		return false
	}
	for _, l := range layers {
		if fi, err := os.Stat(l); err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// load assembles an Image from the local blobs and layers of manifest h.
func (s *Store) load(ref string, h v1.Hash) (*Image, error) {
	raw, err := s.readBlob(h)
	if err != nil {
		return nil, fmt.Errorf("get image %q: manifest: %w", ref, err)
	}
	m, err := v1.ParseManifest(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("get image %q: manifest: %w", ref, err)
	}
	rawCfg, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("get image %q: config: %w", ref, err)
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawCfg)))
	if err != nil {
		return nil, fmt.Errorf("get image %q: config: %w", ref, err)
	}
	img := &Image{Ref: ref, Digest: h.String(), Config: toConfig(cfg)}
	for _, d := range cfg.RootFS.DiffIDs {
		dir := s.layerDir(d)
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("get image %q: layer %s: %w", ref, d, ErrNotFound)
		}
		img.Layers = append(img.Layers, dir)
	}
	return img, nil
}

func toConfig(cf *v1.ConfigFile) Config {
	c := cf.Config
	return Config{
		User:        c.User,
		Env:         c.Env,
		Entrypoint:  c.Entrypoint,
		Cmd:         c.Cmd,
		WorkingDir:  c.WorkingDir,
		Labels:      c.Labels,
		Healthcheck: c.Healthcheck,
	}
}

func (s *Store) layerDir(diffID v1.Hash) string {
	return filepath.Join(s.root, "layers", diffID.Algorithm, diffID.Hex)
}

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

// readBlob reads a stored blob; a missing blob is ErrNotFound.
func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return nil, fmt.Errorf("unsupported digest %s", h)
	}
	b, err := os.ReadFile(s.blobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	}
	return b, err
}

// writeBlob stores b, which the caller verified to have digest h.
func (s *Store) writeBlob(h v1.Hash, b []byte) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("unsupported digest %s", h)
	}
	return s.writeFileAtomic(s.blobPath(h), b)
}

func (s *Store) writeFileAtomic(path string, b []byte) error {
	return atomicfile.Write(path, b, 0o644)
}

func (s *Store) readIndex() (map[string]string, error) {
	idx := map[string]string{}
	b, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	return idx, nil
}

// setIndex records that name resolves to manifest digest dgst.
func (s *Store) setIndex(name, dgst string) error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if idx[name] == dgst {
		return nil
	}
	idx[name] = dgst
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeFileAtomic(filepath.Join(s.root, "index.json"), b); err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	return nil
}

// tmpDir creates a fresh directory under the store's tmp/ dir.
func (s *Store) tmpDir(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	d := filepath.Join(s.root, "tmp", prefix+hex.EncodeToString(b[:]))
	if err := os.Mkdir(d, 0o755); err != nil {
		return "", err
	}
	return d, nil
}
