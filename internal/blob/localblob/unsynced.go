package localblob

// Crash markers for a store written with BatchedSync.
//
// Until Sync, an object Put with BatchedSync lives in the page cache only:
// a host crash (power loss, kernel panic; not a process crash, the rename
// already made the object whole for every reader) can leave it empty,
// short or with blocks that never reached the disk, under its final name.
// So that readers need not verify every object they find (backups reuse
// stored chunks by name), a Store records when that can have happened:
//
//   - before its first unsynced Put, it creates a marker file under
//     .unsynced/ named after its scope (BatchedSync's argument: the
//     objects of one backup key, which only its holder can check) and the
//     boot (/proc/sys/kernel/random/boot_id), and makes it durable (fsync
//     of the file and of the directory);
//   - after a Sync that followed all its Puts (none in flight when the Sync
//     began, none started during it), it removes its marker.
//
// A marker of another boot therefore means that boot may have ended with
// unsynced objects of that scope: CrashedWrites reports it, with the earliest time such
// an object can carry, and whoever can check objects (backuprepo, which
// holds the key) verifies the objects written since, deletes what does not
// check out and calls ClearCrashed. Markers of the current boot (a process
// killed before its Sync) are harmless: the page cache still holds what it
// wrote.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// unsyncedDir holds the markers; like tmpDir, its name is not a valid key
// segment.
const unsyncedDir = ".unsynced"

// crashSlack is subtracted from a marker's time to bound the objects that
// may be damaged: a wall clock stepped back during the crashed boot.
const crashSlack = time.Hour

// bootIDFile names the running kernel's boot (a random UUID per boot).
var bootIDFile = "/proc/sys/kernel/random/boot_id"

func bootID() (string, error) {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := string(bytes.TrimSpace(b))
	if id == "" || strings.ContainsAny(id, "/.") {
		return "", fmt.Errorf("boot id %q: not an id", id)
	}
	return id, nil
}

// beginUnsynced is called before an unsynced Put writes: it makes sure
// this Store's marker exists and counts the Put as in flight.
func (s *Store) beginUnsynced() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.marker == "" {
		name, err := s.writeMarker()
		if err != nil {
			return err
		}
		s.marker = name
	}
	s.puts++
	s.inflight++
	return nil
}

// endUnsynced is called when an unsynced Put returns.
func (s *Store) endUnsynced() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}

// writeMarker creates a durable marker of this boot and returns its path.
func (s *Store) writeMarker() (string, error) {
	boot, err := bootID()
	if err != nil {
		return "", fmt.Errorf("blob put: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := path.Join(unsyncedDir, s.scope+"."+boot+"-"+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rnd[:]))
	f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", classify(fmt.Errorf("blob put: crash marker: %w", err))
	}
	_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.syncDir(unsyncedDir)
	}
	if err != nil {
		s.root.Remove(name)
		return "", classify(fmt.Errorf("blob put: crash marker: %w", err))
	}
	return name, nil
}

func (s *Store) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// syncStarted returns what afterSync needs to know of the Puts when a Sync
// begins.
func (s *Store) syncStarted() (puts uint64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts, s.inflight > 0
}

// afterSync removes this Store's marker when the Sync just completed made
// every Put durable: none was in flight when it began, none started since.
// The removal need not be durable: a marker a crash brings back only costs
// a check of objects that were fine.
func (s *Store) afterSync(puts uint64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.marker == "" || busy || s.puts != puts {
		return
	}
	if err := s.root.Remove(s.marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("blob: cannot remove a crash marker", "marker", s.marker, "err", err)
		return
	}
	s.marker = ""
}

// CrashedWrites reports whether a boot other than the current one may
// have ended with objects of this Store's scope Put but not synced (see
// the package's crash markers): markers names the markers that say so, and
// since is the earliest modification time such an object can have. No
// markers: every object of the scope is as it was written. A Store without
// BatchedSync has no scope and reports none.
func (s *Store) CrashedWrites() (markers []string, since time.Time, err error) {
	if s.scope == "" {
		return nil, time.Time{}, nil
	}
	boot, err := bootID()
	if err != nil {
		return nil, time.Time{}, err
	}
	des, err := fs.ReadDir(s.root.FS(), unsyncedDir)
	if err != nil {
		return nil, time.Time{}, classify(fmt.Errorf("blob crash markers: %w", err))
	}
	for _, d := range des {
		if !strings.HasPrefix(d.Name(), s.scope+".") || strings.HasPrefix(d.Name(), s.scope+"."+boot+"-") || !d.Type().IsRegular() {
			continue
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // cleared meanwhile
		}
		if err != nil {
			return nil, time.Time{}, classify(fmt.Errorf("blob crash markers: %w", err))
		}
		if t := info.ModTime().Add(-crashSlack); since.IsZero() || t.Before(since) {
			since = t
		}
		markers = append(markers, d.Name())
	}
	return markers, since, nil
}

// ClearCrashed removes markers CrashedWrites returned, once the objects
// of the scope they cover were checked.
func (s *Store) ClearCrashed(markers []string) error {
	for _, m := range markers {
		if !strings.HasPrefix(m, s.scope+".") || s.scope == "" || strings.ContainsAny(m, "/") {
			return fmt.Errorf("blob crash marker %q: not a marker name", m)
		}
		if err := s.root.Remove(path.Join(unsyncedDir, m)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return classify(fmt.Errorf("blob crash marker: %w", err))
		}
	}
	if err := s.syncDir(unsyncedDir); err != nil {
		return classify(fmt.Errorf("blob crash markers: %w", err))
	}
	return nil
}

func validScope(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
