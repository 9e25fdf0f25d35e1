package localblob

// Crash markers for a store written with BatchedSync.
//
// Until Sync, an object Put with BatchedSync lives in the page cache only:
// a host crash (power loss, kernel panic; not a process crash, the link
// already made the object whole for every reader) can leave it empty,
// short or with blocks that never reached the disk, under its final name.
// So that readers need not verify every object they find (backups reuse
// stored chunks by name), a Store records when that can have happened:
//
//   - before its first unsynced Put, it creates a marker file under
//     .unsynced/ named after its scope (BatchedSync's argument: the
//     objects of one backup key, which only its holder can check), the
//     machine (/etc/machine-id) and the boot
//     (/proc/sys/kernel/random/boot_id), and makes it durable (fsync of
//     the file and of the directory); another one if the clock went back
//     by more than half of crashSlack since;
//   - after a Sync that followed all its Puts (none in flight when the Sync
//     began, none started during it), it removes its markers.
//
// A marker of this machine and another boot means that boot may have
// ended with unsynced objects of that scope: CrashedWrites reports it,
// with the earliest time such an object can carry, and whoever can check
// objects (backuprepo, which holds the key) verifies the objects written
// since, deletes what does not check out and calls ClearCrashed. A marker
// of another machine (a store on a file system several hosts share) may
// be a backup still running there or a crash: nobody here can tell, and
// CrashedWrites reports it as foreign. Markers of this boot (a process
// killed before its Sync) are harmless: the page cache still holds what
// it wrote.
//
// The scope's epoch file (.unsynced/<scope>.epoch, made on the first
// CrashedWrites) dates when markers began to be kept for it: objects
// older than that were written by a cove that kept none, and only newer
// ones are vouched for.

import (
	"bytes"
	"cmp"
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

	"github.com/covedev/cove/internal/blob"
)

// unsyncedDir holds the markers; like tmpDir, its name is not a valid key
// segment.
const unsyncedDir = ".unsynced"

// crashSlack is subtracted from a marker's time to bound the objects that
// may be damaged: a wall clock stepped back during the crashed boot.
const crashSlack = time.Hour

// The files naming the machine and its boot, and the clock (tests change
// them).
var (
	now           = time.Now
	bootIDFile    = "/proc/sys/kernel/random/boot_id"
	machineIDFile = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}
)

// idFrom reads an id of letters, digits and '-' from the first of files
// that has one.
func idFrom(what string, files ...string) (string, error) {
	var first error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		id := string(bytes.TrimSpace(b))
		if id == "" || len(id) > 64 || strings.Trim(id, "abcdefABCDEF0123456789-") != "" {
			first = cmp.Or(first, fmt.Errorf("%s %q in %s: not an id", what, id, f))
			continue
		}
		return strings.ToLower(id), nil
	}
	return "", fmt.Errorf("%s: %w", what, first)
}

// host is this machine's and this boot's part of a marker's name.
func host() (machine, boot string, err error) {
	if machine, err = idFrom("machine id", machineIDFile...); err != nil {
		return "", "", err
	}
	if boot, err = idFrom("boot id", bootIDFile); err != nil {
		return "", "", err
	}
	return machine, boot, nil
}

// beginUnsynced is called before an unsynced Put writes: it makes sure
// this Store has a marker covering the Put and counts the Put as in
// flight.
func (s *Store) beginUnsynced() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := now(); len(s.markers) == 0 || t.Before(s.markedAt.Add(-crashSlack/2)) {
		name, err := s.writeMarker()
		if err != nil {
			return err
		}
		s.markers = append(s.markers, name)
		s.markedAt = t
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

// writeMarker creates a durable marker of this machine and boot and
// returns its path. Without a machine id it is named as of an unknown
// machine: every other store sees it as foreign, and none clears it.
func (s *Store) writeMarker() (string, error) {
	machine, boot, err := host()
	if err != nil {
		s.log.Warn("blob: crash marker of an unknown machine", "err", err)
		machine, boot = "unknown", "unknown"
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := path.Join(unsyncedDir, s.scope+"."+machine+"."+boot+"."+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rnd[:]))
	if err := s.writeDurable(name); err != nil {
		return "", classify(fmt.Errorf("blob put: crash marker: %w", err))
	}
	return name, nil
}

// writeDurable creates file name (it must not exist) holding the time, and
// makes it durable.
func (s *Store) writeDurable(name string) error {
	f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
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
	}
	return err
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

// afterSync removes this Store's markers when the Sync just completed made
// every Put durable: none was in flight when it began, none started since.
// The removal need not be durable: a marker a crash brings back only costs
// a check of objects that were fine.
func (s *Store) afterSync(puts uint64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.markers) == 0 || busy || s.puts != puts {
		return
	}
	for len(s.markers) > 0 {
		if err := s.root.Remove(s.markers[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("blob: cannot remove a crash marker", "marker", s.markers[0], "err", err)
			return
		}
		s.markers = s.markers[1:]
	}
}

// CrashedWrites implements backuprepo's crash check (see the package's
// crash markers) for this Store's scope. A Store without BatchedSync has
// no scope and reports nothing to check and nothing vouched for.
func (s *Store) CrashedWrites() (blob.CrashState, error) {
	if s.scope == "" {
		return blob.CrashState{}, errors.New("blob crash markers: a store without BatchedSync keeps none")
	}
	machine, boot, err := host()
	if err != nil {
		return blob.CrashState{}, err
	}
	epoch, err := s.epoch()
	if err != nil {
		return blob.CrashState{}, classify(fmt.Errorf("blob crash markers: %w", err))
	}
	st := blob.CrashState{Epoch: epoch}
	des, err := fs.ReadDir(s.root.FS(), unsyncedDir)
	if err != nil {
		return blob.CrashState{}, classify(fmt.Errorf("blob crash markers: %w", err))
	}
	for _, d := range des {
		parts := strings.Split(d.Name(), ".")
		if len(parts) != 4 || parts[0] != s.scope || !d.Type().IsRegular() {
			continue
		}
		switch {
		case parts[1] != machine:
			st.Foreign = true
			continue
		case parts[2] == boot:
			continue
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // cleared meanwhile
		}
		if err != nil {
			return blob.CrashState{}, classify(fmt.Errorf("blob crash markers: %w", err))
		}
		if t := info.ModTime().Add(-crashSlack); st.Since.IsZero() || t.Before(st.Since) {
			st.Since = t
		}
		st.Markers = append(st.Markers, d.Name())
	}
	return st, nil
}

// epoch returns the modification time of the scope's epoch file, made
// now if missing.
func (s *Store) epoch() (time.Time, error) {
	name := path.Join(unsyncedDir, s.scope+".epoch")
	info, err := s.root.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.writeDurable(name); errors.Is(err, fs.ErrExist) {
			err = nil // made meanwhile by another process
		}
		if err == nil {
			info, err = s.root.Stat(name)
		}
	}
	if err != nil {
		return time.Time{}, err
	}
	return info.ModTime(), nil
}

// ClearCrashed removes markers CrashedWrites returned, once the objects
// of the scope they cover were checked.
func (s *Store) ClearCrashed(markers []string) error {
	for _, m := range markers {
		if s.scope == "" || !strings.HasPrefix(m, s.scope+".") || strings.ContainsAny(m, "/") || strings.HasSuffix(m, ".epoch") {
			return fmt.Errorf("blob crash marker %q: not a marker of scope %q", m, s.scope)
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
