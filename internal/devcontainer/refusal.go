package devcontainer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// Location is where a refused value is written: a file of the repository
// (relative to it) with the property path and, when known, the line and
// column of the value; or, for values that come from elsewhere (an image's
// metadata, a feature), that origin.
type Location struct {
	// File is the repository-relative file ("" when the value does not come
	// from a file of the repository).
	File string
	// Origin names what the value came from when File is empty:
	// `feature "ghcr.io/x/y:1"`, "the image's metadata".
	Origin string
	// Path is the property path: "runArgs[2]", "mounts[0]",
	// `features["ghcr.io/x/y:1"]`, "services.db.privileged".
	Path string
	// Line and Col are 1-based; 0 when unknown.
	Line, Col int
}

// where is "FILE:LINE:COL", "FILE" or the origin.
func (l Location) where() string {
	switch {
	case l.File != "" && l.Line > 0:
		return fmt.Sprintf("%s:%d:%d", l.File, l.Line, l.Col)
	case l.File != "":
		return l.File
	}
	return l.Origin
}

// String is "FILE:LINE:COL: path" (or the parts of it that are known).
func (l Location) String() string {
	w := l.where()
	switch {
	case w == "":
		return l.Path
	case l.Path == "":
		return w
	}
	return w + ": " + l.Path
}

// Refusal is one thing cove will not do for a configuration: where it is
// asked for (every place, when it is asked for more than once), why it is
// refused and what to do instead.
type Refusal struct {
	// Key identifies the problem: refusals with the same non-empty key are
	// one problem asked for in several places ("secopt:seccomp=unconfined").
	Key       string
	Locations []Location
	// Reason says what is asked for and why cove refuses it.
	Reason string
	// Remedy says what to do instead; "" when there is nothing to add.
	Remedy string
}

// String is the refusal on one line: its first location, the others, the
// reason and the remedy.
func (r Refusal) String() string {
	var b strings.Builder
	for i, l := range r.Locations {
		switch {
		case i == 0:
			b.WriteString(l.String())
		case i == 1:
			fmt.Fprintf(&b, " (also %s", l.alsoString())
		default:
			fmt.Fprintf(&b, ", %s", l.alsoString())
		}
	}
	if len(r.Locations) > 1 {
		b.WriteString(")")
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(strings.TrimSuffix(r.Reason, "."))
	if r.Remedy != "" {
		b.WriteString(". To fix: ")
		b.WriteString(strings.TrimSuffix(r.Remedy, "."))
	}
	b.WriteString(".")
	return b.String()
}

// alsoString is "path at FILE:LINE:COL", the form of a second location.
func (l Location) alsoString() string {
	w := l.where()
	switch {
	case l.Path == "":
		return w
	case w == "":
		return l.Path
	}
	return l.Path + " at " + w
}

// Refusals collects refusals, one per problem: adding a refusal whose key
// is already there adds its locations to the first one.
type Refusals struct {
	list []Refusal
}

// Add records r, merging it into an earlier refusal with the same key.
func (rs *Refusals) Add(r Refusal) {
	if r.Key != "" {
		for i := range rs.list {
			if rs.list[i].Key != r.Key {
				continue
			}
			for _, l := range r.Locations {
				if !slices.Contains(rs.list[i].Locations, l) {
					rs.list[i].Locations = append(rs.list[i].Locations, l)
				}
			}
			return
		}
	}
	r.Locations = slices.Clone(r.Locations)
	rs.list = append(rs.list, r)
}

// Len is the number of problems.
func (rs *Refusals) Len() int { return len(rs.list) }

// List returns the problems in the order they were first added.
func (rs *Refusals) List() []Refusal { return slices.Clone(rs.list) }

// Err is nil without problems, else a user error whose message is
// "<subject>: cove cannot run this dev container configuration:" followed by
// one line per problem. errors.As finds the *RefusalError in it.
func (rs *Refusals) Err(subject string) error {
	if len(rs.list) == 0 {
		return nil
	}
	// In the file's order; values from elsewhere (features, the image)
	// after those, as they were found.
	list := rs.List()
	for i := range list {
		slices.SortStableFunc(list[i].Locations, fileOrder)
	}
	slices.SortStableFunc(list, func(a, b Refusal) int {
		var pa, pb Location
		if len(a.Locations) > 0 {
			pa = a.Locations[0]
		}
		if len(b.Locations) > 0 {
			pb = b.Locations[0]
		}
		return fileOrder(pa, pb)
	})
	e := &RefusalError{Subject: subject, Refusals: list}
	return usererr.Wrap(e, "%s", e.Error())
}

// maxListed bounds the problems one message lists (an environment's
// failure message is bounded; the first ones are what to fix first).
const maxListed = 15

// RefusalError is a configuration refused for one or more problems.
type RefusalError struct {
	// Subject names what was refused: the configuration's file.
	Subject  string
	Refusals []Refusal
}

func (e *RefusalError) Error() string {
	var b strings.Builder
	if e.Subject != "" {
		b.WriteString(e.Subject + ": ")
	}
	b.WriteString("cove cannot run this dev container configuration")
	if len(e.Refusals) > 1 {
		fmt.Fprintf(&b, " (%d problems)", len(e.Refusals))
	}
	b.WriteString(":")
	for i, r := range e.Refusals {
		if i == maxListed && len(e.Refusals) > maxListed+1 {
			fmt.Fprintf(&b, "\n  - and %d more problems; fix these first", len(e.Refusals)-maxListed)
			break
		}
		b.WriteString("\n  - " + r.String())
	}
	return b.String()
}

// Refused returns the refusals in err, if it is (or wraps) a RefusalError.
func Refused(err error) []Refusal {
	var e *RefusalError
	if errors.As(err, &e) {
		return slices.Clone(e.Refusals)
	}
	return nil
}

// File is the configuration's file as messages name it: relative to the
// repository when it was found there (Read), else its path.
func (c *Config) File() string {
	if c.src != nil && c.src.name != "" {
		return c.src.name
	}
	return c.Path
}

// Loc is the Location of a property of the configuration, with the line
// and column of its value (or of its closest parent the file has).
func (c *Config) Loc(path string) Location {
	l := Location{File: c.File(), Path: path}
	if c.src == nil {
		return l
	}
	for p := sourcePath(path); p != ""; {
		if off, ok := c.src.pos[p]; ok {
			l.Line, l.Col = lineColumn(c.src.data, off)
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return l
}

// sourcePath turns the message form of a path (`features["a/b:1"].x`)
// into the form source.pos is keyed by (`features.a/b:1.x`).
func sourcePath(p string) string {
	var b strings.Builder
	for {
		i := strings.Index(p, `["`)
		if i < 0 {
			break
		}
		j := strings.Index(p[i:], `"]`)
		if j < 0 {
			break
		}
		var key string
		if _, err := fmt.Sscanf(p[i+1:i+j+1], "%q", &key); err != nil {
			key = p[i+2 : i+j]
		}
		b.WriteString(p[:i] + "." + key)
		p = p[i+j+2:]
	}
	return b.String() + p
}

// fileOrder orders locations by line and column, those without a line last.
func fileOrder(a, b Location) int {
	switch {
	case a.Line == 0 || b.Line == 0:
		return cmp.Compare(min(b.Line, 1), min(a.Line, 1))
	case a.Line != b.Line:
		return cmp.Compare(a.Line, b.Line)
	}
	return cmp.Compare(a.Col, b.Col)
}
