package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/blob"
	"golang.org/x/sys/unix"
)

// syncfsStore is an experiment, not a cove store: a directory store like
// localblob whose Put does not fsync each object; the durability comes
// from one syncfs(2) at the end of the backup (Sync), before which no
// backup would be reported done. It measures what localblob's two
// fsyncs per object cost (BB-findings: "one sync per backup instead of
// two per object"). Keys come from backuprepo (trusted here).
type syncfsStore struct{ root string }

func newSyncfsStore(root string) (*syncfsStore, error) {
	if err := os.MkdirAll(filepath.Join(root, ".tmp"), 0o700); err != nil {
		return nil, err
	}
	return &syncfsStore{root: root}, nil
}

func (s *syncfsStore) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

func (s *syncfsStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.root, ".tmp"), "put-")
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && size >= 0 && n != size {
		err = blob.SizeMismatch(key, size, n)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(s.path(key)), 0o700)
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(key))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func (s *syncfsStore) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	f, err := os.Open(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, blob.NotFound(key)
	}
	if err != nil || rng.IsWhole() {
		return f, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	n := st.Size() - rng.Offset
	if rng.Length > 0 {
		n = min(n, rng.Length)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, rng.Offset, n), f}, nil
}

func (s *syncfsStore) Stat(ctx context.Context, key string) (blob.Info, error) {
	st, err := os.Stat(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return blob.Info{}, blob.NotFound(key)
	}
	if err != nil {
		return blob.Info{}, err
	}
	return blob.Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (s *syncfsStore) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		var keys []string
		err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == ".tmp" {
				return filepath.SkipDir
			}
			rel, _ := filepath.Rel(s.root, p)
			if k := filepath.ToSlash(rel); d.Type().IsRegular() && strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil {
			yield(blob.Info{}, err)
			return
		}
		for _, k := range keys { // WalkDir's lexical order per directory is the keys' order
			info, err := s.Stat(ctx, k)
			if !yield(info, err) || err != nil {
				return
			}
		}
	}
}

func (s *syncfsStore) Delete(ctx context.Context, key string) error {
	err := os.Remove(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Sync makes everything stored so far durable: one syncfs(2) of the file
// system holding the store.
func (s *syncfsStore) Sync() error {
	f, err := os.Open(s.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
