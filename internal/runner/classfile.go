package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/tailscale/hujson"
)

// The classes file (`cove runner --classes FILE`, docs/runners.md#classes)
// defines every class a runner offers, each with its whole resource
// definition. It is JSON with comments and trailing commas (HuJSON):
//
//	{
//	  "classes": [
//	    {"id": "small", "cpus": 1, "cpuBurst": 2, "memory": "4GiB"},
//	    {"id": "large", "displayName": "Large", "cpus": 4, "memory": "16GiB",
//	     "memoryHigh": 80, "swap": "2GiB", "pids": 16384, "disk": "100GiB",
//	     "ioWriteBps": "200MiB", "ioWriteIops": 2000, "egressPolicy": "deny-private",
//	     "maxInactivity": "2h", "maxLifetime": "12h"}
//	  ]
//	}
//
// It is read strictly: an unknown key, a value of the wrong type, a size
// that does not parse or a limit that cannot be applied is an error that
// says where (line and column) and what is wanted.

// MaxClasses is the most classes a classes file may define (the server
// accepts no more from a runner).
const MaxClasses = 32

// DefaultClassPids is the pids limit of a class that sets none.
const DefaultClassPids = 8192

// classIDRE is what the server accepts as a class id.
var classIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// classKeys are the keys of a class in the file, with what each takes.
var classKeys = []string{"id", "displayName", "runtime", "cpus", "cpuBurst", "memory", "memoryHigh", "swap", "pids", "disk",
	"ioReadBps", "ioWriteBps", "ioReadIops", "ioWriteIops", "egressPolicy", "egressAllow", "egressRate", "ingressRate",
	"maxInactivity", "maxLifetime"}

// LoadClasses reads the classes file at path.
func LoadClasses(path string) ([]*covev1.EnvironmentClass, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("classes file: %w", err)
	}
	cs, err := ParseClasses(b)
	if err != nil {
		return nil, fmt.Errorf("classes file %s: %w", path, err)
	}
	return cs, nil
}

// ParseClasses parses a classes file's content.
func ParseClasses(b []byte) ([]*covev1.EnvironmentClass, error) {
	if len(b) > 1<<20 {
		return nil, errors.New("larger than 1 MiB")
	}
	root, err := hujson.Parse(b)
	if err != nil {
		return nil, err
	}
	p := classParser{src: b}
	obj, ok := root.Value.(*hujson.Object)
	if !ok {
		return nil, p.errAt(root, `want an object: {"classes": [...]}`)
	}
	var list *hujson.Value
	for i := range obj.Members {
		m := &obj.Members[i]
		if name := p.name(m); name != "classes" {
			return nil, p.errAt(m.Name, `unknown key %q: the file has one key, "classes"`, name)
		}
		list = &m.Value
	}
	if list == nil {
		return nil, p.errAt(root, `no "classes" list`)
	}
	arr, ok := list.Value.(*hujson.Array)
	if !ok {
		return nil, p.errAt(*list, "classes: want a list of classes")
	}
	if len(arr.Elements) == 0 {
		return nil, p.errAt(*list, "classes: the list is empty; define at least one class")
	}
	if len(arr.Elements) > MaxClasses {
		return nil, p.errAt(*list, "classes: %d classes, at most %d", len(arr.Elements), MaxClasses)
	}
	seen := map[string]bool{}
	var out []*covev1.EnvironmentClass
	for _, e := range arr.Elements {
		c, err := p.class(e)
		if err != nil {
			return nil, err
		}
		if seen[c.GetId()] {
			return nil, p.errAt(e, "class %q is defined twice", c.GetId())
		}
		seen[c.GetId()] = true
		out = append(out, c)
	}
	return out, nil
}

type classParser struct{ src []byte }

// errAt is an error at v's position in the file.
func (p classParser) errAt(v hujson.Value, format string, args ...any) error {
	n := min(max(v.StartOffset, 0), len(p.src))
	line := 1 + bytes.Count(p.src[:n], []byte("\n"))
	col := 1 + n - (bytes.LastIndexByte(p.src[:n], '\n') + 1)
	return fmt.Errorf("line %d, column %d: %s", line, col, fmt.Sprintf(format, args...))
}

func (p classParser) name(m *hujson.ObjectMember) string {
	lit, _ := m.Name.Value.(hujson.Literal)
	return lit.String()
}

// class parses one class object.
func (p classParser) class(v hujson.Value) (*covev1.EnvironmentClass, error) {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		return nil, p.errAt(v, `want a class: an object such as {"id": "small", "cpus": 1, "memory": "4GiB"}`)
	}
	c := &covev1.EnvironmentClass{Runtime: "container", EgressPolicy: "allow-all"}
	set := map[string]hujson.Value{}
	for i := range obj.Members {
		m := &obj.Members[i]
		key := p.name(m)
		if !slices.Contains(classKeys, key) {
			return nil, p.errAt(m.Name, "unknown key %q (a class takes %s)", key, strings.Join(classKeys, ", "))
		}
		if _, dup := set[key]; dup {
			return nil, p.errAt(m.Name, "%q is set twice", key)
		}
		set[key] = m.Value
	}
	id, ok := set["id"]
	if !ok {
		return nil, p.errAt(v, `class without an "id"`)
	}
	if err := p.str(id, "id", &c.Id); err != nil {
		return nil, err
	}
	if !classIDRE.MatchString(c.Id) {
		return nil, p.errAt(id, "id %q: use lower-case letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)", c.Id)
	}
	// Every error below names the class.
	in := func(err error) error {
		if err == nil {
			return nil
		}
		return fmt.Errorf("class %s: %w", c.Id, err)
	}
	for _, req := range []string{"cpus", "memory"} {
		if _, ok := set[req]; !ok {
			return nil, in(p.errAt(v, "%q is required", req))
		}
	}
	var cpus, burst, high, pids int64
	for _, key := range classKeys { // in a fixed order: the first error is always the same
		val, ok := set[key]
		if !ok {
			continue
		}
		var err error
		switch key {
		case "id":
		case "displayName":
			err = p.str(val, key, &c.DisplayName)
		case "runtime":
			err = p.str(val, key, &c.Runtime)
		case "egressPolicy":
			err = p.str(val, key, &c.EgressPolicy)
		case "egressAllow":
			err = p.strs(val, key, &c.EgressAllow)
		case "cpus":
			err = p.count(val, key, 1, 1024, &cpus)
		case "cpuBurst":
			err = p.count(val, key, 0, 1024, &burst)
		case "memoryHigh":
			err = p.count(val, key, 1, 100, &high)
		case "pids":
			err = p.count(val, key, -1, 1<<22, &pids)
		case "memory":
			err = p.size(val, key, false, &c.MemoryBytes)
		case "disk":
			err = p.size(val, key, false, &c.DiskBytes)
		case "swap":
			err = p.size(val, key, true, &c.SwapBytes)
		case "ioReadBps":
			err = p.size(val, key, false, &c.IoReadBps)
		case "ioWriteBps":
			err = p.size(val, key, false, &c.IoWriteBps)
		case "ioReadIops":
			err = p.count(val, key, 0, math.MaxInt32, &c.IoReadIops)
		case "ioWriteIops":
			err = p.count(val, key, 0, math.MaxInt32, &c.IoWriteIops)
		case "egressRate":
			err = p.count(val, key, 0, math.MaxInt64, &c.EgressRateBits)
		case "ingressRate":
			err = p.count(val, key, 0, math.MaxInt64, &c.IngressRateBits)
		case "maxInactivity":
			err = p.duration(val, key, &c.MaxInactivitySeconds) // classfile_timeouts.go
		case "maxLifetime":
			err = p.duration(val, key, &c.MaxLifetimeSeconds)
		}
		if err != nil {
			return nil, in(err)
		}
	}
	if c.MemoryBytes < 1<<20 {
		return nil, in(p.errAt(set["memory"], "memory %d bytes: want at least 1MiB", c.MemoryBytes))
	}
	c.Cpus, c.CpuBurst, c.MemoryHighPercent = int32(cpus), int32(burst), int32(high)
	switch pids {
	case 0:
		c.Pids = DefaultClassPids
	case -1:
		c.Pids = 0 // no limit
	default:
		c.Pids = int32(pids)
	}
	switch c.EgressPolicy {
	case "allow-all", "deny-private", "allowlist":
	default:
		return nil, in(p.errAt(set["egressPolicy"], "egressPolicy %q: want allow-all, deny-private or allowlist", c.EgressPolicy))
	}
	if c.Runtime != "container" {
		return nil, in(p.errAt(set["runtime"], "runtime %q: this runner has the \"container\" runtime only", c.Runtime))
	}
	if err := CheckClass(c); err != nil {
		// The checks that relate fields (the burst ceiling and the CPUs).
		at := v
		if b, ok := set["cpuBurst"]; ok {
			at = b
		}
		return nil, in(p.errAt(at, "%s", strings.TrimPrefix(err.Error(), "class "+c.Id+": ")))
	}
	return c, nil
}

func (p classParser) literal(v hujson.Value) (hujson.Literal, bool) {
	lit, ok := v.Value.(hujson.Literal)
	return lit, ok
}

func (p classParser) str(v hujson.Value, key string, out *string) error {
	lit, ok := p.literal(v)
	if !ok || lit.Kind() != '"' {
		return p.errAt(v, "%s: want a string", key)
	}
	*out = lit.String()
	return nil
}

func (p classParser) strs(v hujson.Value, key string, out *[]string) error {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		return p.errAt(v, "%s: want a list of strings", key)
	}
	for _, e := range arr.Elements {
		var s string
		if err := p.str(e, key, &s); err != nil {
			return err
		}
		*out = append(*out, s)
	}
	return nil
}

// count parses a whole number in [lo, hi].
func (p classParser) count(v hujson.Value, key string, lo, hi int64, out *int64) error {
	lit, ok := p.literal(v)
	var n int64
	if ok && lit.Kind() == '0' {
		n, ok = wholeNumber(lit)
	}
	if !ok || n < lo || n > hi {
		return p.errAt(v, "%s: want a whole number from %d to %d", key, lo, hi)
	}
	*out = n
	return nil
}

// size parses bytes: a whole number, or a string with a binary unit
// ("512MiB", "4GiB"); -1 (unlimited) too when allowUnlimited.
func (p classParser) size(v hujson.Value, key string, allowUnlimited bool, out *int64) error {
	want := `want bytes: a number or a size such as "512MiB" or "4GiB" (KiB, MiB, GiB, TiB)`
	if allowUnlimited {
		want += ", 0 for none or -1 for unlimited"
	}
	lit, ok := p.literal(v)
	if !ok {
		return p.errAt(v, "%s: %s", key, want)
	}
	var n int64
	switch lit.Kind() {
	case '0':
		n, ok = wholeNumber(lit)
		if !ok || n < 0 && !(allowUnlimited && n == -1) {
			return p.errAt(v, "%s: %s", key, want)
		}
	case '"':
		n, ok = parseSize(lit.String())
		if !ok {
			return p.errAt(v, "%s: %q: %s", key, lit.String(), want)
		}
	default:
		return p.errAt(v, "%s: %s", key, want)
	}
	*out = n
	return nil
}

// wholeNumber is the integer a JSON number literal spells, if it is one.
func wholeNumber(lit hujson.Literal) (int64, bool) {
	var n json.Number
	if json.Unmarshal(lit, &n) != nil {
		return 0, false
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	return i, err == nil
}

// parseSize parses "123", "512MiB", "4GiB" (binary units only: "4GB"
// would be ambiguous).
func parseSize(s string) (int64, bool) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, false
	}
	return n * mult, true
}
