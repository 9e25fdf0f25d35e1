package localblob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/internal/blob"
)

// Quarantine moves the object at key aside, in one rename (readers then
// find no object there), and returns it open: whoever checks objects reads
// what it moved — not what the key named a moment before, which a
// concurrent Put may have replaced — then puts it back or drops it. A
// backup deleting a damaged chunk by name could otherwise delete the good
// copy another backup just stored under the same key (review REV-S9-4).
func (s *Store) Quarantine(ctx context.Context, key string) (blob.Quarantined, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blob quarantine %q: %w", key, err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := path.Join(quarantineDir, strconv.FormatInt(now().UnixNano(), 10)+"."+hex.EncodeToString(rnd[:])+"."+strings.ReplaceAll(key, "/", "~"))
	if err := s.root.Rename(key, tmp); err != nil {
		return nil, classifyKey(key, "quarantine", err)
	}
	f, err := s.root.Open(tmp)
	if err != nil {
		// Put it back rather than lose it.
		if rerr := s.renameNoReplace(tmp, key); rerr != nil {
			s.log.Warn("blob: a quarantined object could not be put back", "key", key, "err", rerr)
		}
		return nil, classify(fmt.Errorf("blob quarantine %q: %w", key, err))
	}
	return &quarantined{s: s, key: key, tmp: tmp, f: f}, nil
}

// quarantineDir holds quarantined objects, named
// <unix nanoseconds>.<random>.<key with '/' as '~'> ('~' is not a key
// character); like tmpDir, its name is not a valid key segment.
const quarantineDir = ".quarantine"

// recoverQuarantined puts back (unless the key holds an object again) the
// objects a process quarantined more than staleTmp ago and never put back
// nor dropped: it was killed while checking them. Whether they are whole
// is for whoever checks objects to find out again (the crash markers
// that sent it are cleared only after its check).
func (s *Store) recoverQuarantined() {
	des, err := fs.ReadDir(s.root.FS(), quarantineDir)
	if err != nil {
		s.log.Warn("blob: cannot list quarantined objects", "dir", s.dir, "err", err)
		return
	}
	for _, d := range des {
		parts := strings.SplitN(d.Name(), ".", 3)
		if len(parts) != 3 {
			continue
		}
		at, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || now().Sub(time.Unix(0, at)) < staleTmp {
			continue
		}
		key := strings.ReplaceAll(parts[2], "~", "/")
		if blob.ValidateKey(key) != nil {
			continue
		}
		q := &quarantined{s: s, key: key, tmp: path.Join(quarantineDir, d.Name())}
		if err := q.putBack(); err != nil {
			s.log.Warn("blob: a quarantined object could not be put back", "key", key, "err", err)
		} else {
			s.log.Info("blob: put back an object an interrupted check had set aside", "key", key)
		}
	}
}

// renameNoReplace moves from to to unless to exists (fs.ErrExist), as a
// hard link and an unlink through the store's os.Root: neither path is
// resolved outside the directory, whatever symlink is planted in it.
func (s *Store) renameNoReplace(from, to string) error {
	if err := s.root.Link(from, to); err != nil {
		return err
	}
	return s.root.Remove(from)
}

type quarantined struct {
	s        *Store
	key, tmp string
	f        *os.File
	done     bool
}

func (q *quarantined) Read(p []byte) (int, error) { return q.f.Read(p) }

// Restore puts the object back under its key, unless an object was stored
// there meanwhile (that one stays, this one is dropped).
func (q *quarantined) Restore() error {
	if q.done {
		return nil
	}
	q.done = true
	q.f.Close()
	return q.putBack()
}

func (q *quarantined) putBack() error {
	err := q.s.renameNoReplace(q.tmp, q.key)
	if errors.Is(err, fs.ErrExist) {
		return q.s.root.Remove(q.tmp)
	}
	if err != nil {
		return classify(fmt.Errorf("blob quarantine %q: put back: %w", q.key, err))
	}
	return nil
}

// Drop deletes the object.
func (q *quarantined) Drop() error {
	if q.done {
		return nil
	}
	q.done = true
	q.f.Close()
	if err := q.s.root.Remove(q.tmp); err != nil {
		return classify(fmt.Errorf("blob quarantine %q: drop: %w", q.key, err))
	}
	return nil
}

var _ io.Reader = (*quarantined)(nil)
