package envdir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/idmap"
)

// StateVersion is the version of the state file this code writes.
const StateVersion = 1

// ErrNewerState is returned for a state file written by a newer runner:
// reading it would silently drop what this runner does not know.
var ErrNewerState = errors.New("state file written by a newer runner")

// Header is the part of the state file every version has: embedded (not
// as a named field) in the runner's state type, whose sections sit beside
// it.
type Header struct {
	Version int         `json:"version"`
	ID      string      `json:"id"`
	IDMap   idmap.Range `json:"idMap"`
}

// StateHeader gives Load and Save the header of a state value.
func (h *Header) StateHeader() *Header { return h }

// Versioned is a state value: a struct embedding Header.
type Versioned interface{ StateHeader() *Header }

// Load reads the state file at path into v, migrating it from the version
// it was written in. A missing file is an error satisfying
// errors.Is(err, fs.ErrNotExist).
func Load(path string, v Versioned) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := Decode(b, v); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

// Decode is Load from bytes.
func Decode(b []byte, v Versioned) error {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if doc == nil {
		return errors.New("parse: not a JSON object")
	}
	if err := migrate(doc); err != nil {
		return err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// Save writes v to path atomically as the current version.
func Save(path string, v Versioned) error {
	b, err := Encode(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// Encode is what Save writes for v.
func Encode(v Versioned) ([]byte, error) {
	v.StateHeader().Version = StateVersion
	return json.MarshalIndent(v, "", "  ")
}

// SaveIfChanged saves v unless what it would write equals prev, and
// returns what the file now holds (Save costs a synchronous write: the
// runner saves after every step, most of which change nothing).
func SaveIfChanged(path string, v Versioned, prev []byte) ([]byte, error) {
	b, err := Encode(v)
	if err != nil {
		return prev, err
	}
	if bytes.Equal(b, prev) {
		return prev, nil
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return prev, err
	}
	return b, nil
}
