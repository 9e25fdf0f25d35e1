package devcontainer

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

var bytesRE = regexp.MustCompile(`^(\d+)([tgmk]b)?$`)

// ParseBytes parses a hostRequirements size ("4gb", "512mb", "1073741824")
// as the reference CLI does (powers of 1024; lower-case units). It returns
// 0 for anything else.
func ParseBytes(s string) int64 {
	m := bytesRE.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0
	}
	mult := map[string]int64{"": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}[m[2]]
	if n > math.MaxInt64/mult {
		return math.MaxInt64
	}
	return n * mult
}

// mergeHostRequirements takes the largest of each requirement.
func mergeHostRequirements(entries []MetadataEntry) any {
	var cpus float64
	var mem, storage int64
	var gpu any
	for _, e := range entries {
		hr, _ := e["hostRequirements"].(map[string]any)
		if c, ok := hr["cpus"].(float64); ok && c > cpus {
			cpus = c
		}
		if s, ok := hr["memory"].(string); ok {
			mem = max(mem, ParseBytes(s))
		}
		if s, ok := hr["storage"].(string); ok {
			storage = max(storage, ParseBytes(s))
		}
		gpu = mergeGPU(gpu, hr["gpu"])
	}
	if cpus == 0 && mem == 0 && storage == 0 && !truthy(gpu) {
		return nil
	}
	out := map[string]any{"cpus": cpus}
	if mem > 0 {
		out["memory"] = strconv.FormatInt(mem, 10)
	}
	if storage > 0 {
		out["storage"] = strconv.FormatInt(storage, 10)
	}
	if gpu != nil {
		out["gpu"] = gpu
	}
	return out
}

func mergeGPU(a, b any) any {
	if a == nil || a == false {
		return b
	}
	if b == nil || b == false {
		return a
	}
	if a == "optional" && b == "optional" {
		return "optional"
	}
	ao, _ := a.(map[string]any)
	bo, _ := b.(map[string]any)
	num := func(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	out := map[string]any{}
	if c := max(num(ao, "cores"), num(bo, "cores")); c > 0 {
		out["cores"] = c
	}
	if m := max(ParseBytes(str(ao, "memory")), ParseBytes(str(bo, "memory"))); m > 0 {
		out["memory"] = strconv.FormatInt(m, 10)
	}
	return out
}

// Class is an environment class a runner offers.
type Class struct {
	ID       string
	CPUs     int
	Memory   int64 // bytes
	Storage  int64 // bytes
	GPUs     int
	Disabled bool
}

// sizeRE is the spec's grammar for hostRequirements sizes (a whole number
// of bytes, or of kb, mb, gb or tb: powers of 1024). The spec and the
// reference CLI write the unit in lower case; cove also reads "8GB" and
// "8Gb" as 8gb rather than ignoring the requirement, as the reference
// does.
var sizeRE = regexp.MustCompile(`^(\d+)([tgmkTGMK][bB])?$`)

// ParseSize parses a hostRequirements size ("32gb", "8GB", "512mb",
// "1073741824"). Anything else is a user error that says how to write
// one; prop names the property ("hostRequirements.storage").
func ParseSize(prop, s string) (int64, error) {
	if sizeRE.MatchString(s) {
		return ParseBytes(strings.ToLower(s)), nil
	}
	return 0, usererr.New("%s: %q is not a size: write a whole number with an optional unit kb, mb, gb or tb (powers of 1024), e.g. \"32gb\" or \"512mb\"", prop, s)
}

// parseSize is ParseSize for a requirement cove checks: "" is no
// requirement.
func parseSize(prop, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return ParseSize(prop, s)
}

// CheckedHostRequirements is HostRequirements as cove checks them: the
// largest of every entry, with sizes read by ParseSize (so "8GB" counts
// instead of being dropped as the reference's merge drops it), or a user
// error naming the entry and the size that is not one. nil when nothing
// is required.
func (m *Merged) CheckedHostRequirements() (*HostRequirements, error) {
	var out HostRequirements
	if hr := m.t.HostRequirements; hr != nil {
		out = *hr
	}
	var mem, storage, gpuMem int64
	for i, e := range m.Entries {
		hr, _ := e["hostRequirements"].(map[string]any)
		where := func(prop string) string {
			if m.configEntry && i == len(m.Entries)-1 && m.Config != nil {
				return m.Config.At("hostRequirements." + prop)
			}
			return m.origin(i)
		}
		for prop, dst := range map[string]*int64{"memory": &mem, "storage": &storage} {
			str, ok := hr[prop].(string)
			if !ok {
				continue
			}
			n, err := ParseSize("hostRequirements."+prop, str)
			if err != nil {
				return nil, usererr.Wrap(err, "%s: %v", where(prop), err)
			}
			*dst = max(*dst, n)
		}
		if g, ok := hr["gpu"].(map[string]any); ok {
			if str, ok := g["memory"].(string); ok {
				n, err := ParseSize("hostRequirements.gpu.memory", str)
				if err != nil {
					return nil, usererr.Wrap(err, "%s: %v", where("gpu.memory"), err)
				}
				gpuMem = max(gpuMem, n)
			}
		}
	}
	out.Memory, out.Storage = "", ""
	if mem > 0 {
		out.Memory = strconv.FormatInt(mem, 10)
	}
	if storage > 0 {
		out.Storage = strconv.FormatInt(storage, 10)
	}
	if gpuMem > 0 {
		out.GPU.Memory = strconv.FormatInt(gpuMem, 10)
	}
	if out.CPUs == 0 && mem == 0 && storage == 0 && !out.GPU.Required && !out.GPU.Optional {
		return nil, nil
	}
	return &out, nil
}

// requirement is a HostRequirements in numbers.
type requirement struct {
	cpus          int
	memory, store int64
	gpus          int
}

func readRequirement(req *HostRequirements) (requirement, error) {
	var r requirement
	if req == nil {
		return r, nil
	}
	var err error
	r.cpus = req.CPUs
	if r.memory, err = parseSize("hostRequirements.memory", req.Memory); err != nil {
		return r, err
	}
	if r.store, err = parseSize("hostRequirements.storage", req.Storage); err != nil {
		return r, err
	}
	if req.GPU.Required {
		r.gpus = max(1, req.GPU.Cores)
	}
	return r, nil
}

// Unmet says what class c lacks for req, one phrase per requirement, in
// human units ("needs 64 GB of storage; class standard has 40 GB"); nil
// when c meets req. A size that is not one is a user error.
func Unmet(req *HostRequirements, c Class) ([]string, error) {
	r, err := readRequirement(req)
	if err != nil {
		return nil, err
	}
	return r.unmet(c), nil
}

func (r requirement) unmet(c Class) []string {
	var out []string
	if c.CPUs < r.cpus {
		out = append(out, fmt.Sprintf("needs %s; class %s has %d", cpus(r.cpus), c.ID, c.CPUs))
	}
	if c.Memory < r.memory {
		out = append(out, fmt.Sprintf("needs %s of memory; class %s has %s", HumanBytes(r.memory), c.ID, HumanBytes(c.Memory)))
	}
	if c.Storage < r.store {
		out = append(out, fmt.Sprintf("needs %s of storage; class %s has %s", HumanBytes(r.store), c.ID, HumanBytes(c.Storage)))
	}
	if c.GPUs < r.gpus {
		out = append(out, fmt.Sprintf("needs a GPU; class %s has none", c.ID))
	}
	return out
}

// ChooseClass returns the smallest class (by CPUs, then memory, then
// storage) that meets req, or a user error naming what no class offers.
// A nil req fits any class; an optional GPU is not required.
func ChooseClass(req *HostRequirements, classes []Class) (string, error) {
	r, err := readRequirement(req)
	if err != nil {
		return "", err
	}
	best := -1
	for i, c := range classes {
		if c.Disabled || len(r.unmet(c)) > 0 {
			continue
		}
		if best < 0 || less(c, classes[best]) {
			best = i
		}
	}
	if best >= 0 {
		return classes[best].ID, nil
	}
	var want []string
	if r.cpus > 0 {
		want = append(want, cpus(r.cpus))
	}
	if r.memory > 0 {
		want = append(want, HumanBytes(r.memory)+" of memory")
	}
	if r.store > 0 {
		want = append(want, HumanBytes(r.store)+" of storage")
	}
	if r.gpus > 0 {
		want = append(want, "a GPU")
	}
	if len(want) == 0 {
		return "", usererr.New("no environment class is available")
	}
	var offered []string
	for _, c := range classes {
		if !c.Disabled {
			offered = append(offered, fmt.Sprintf("%s (%s, %s memory, %s storage)", c.ID, cpus(c.CPUs), HumanBytes(c.Memory), HumanBytes(c.Storage)))
		}
	}
	if len(offered) == 0 {
		offered = []string{"none"}
	}
	return "", usererr.New("hostRequirements: no environment class has %s; classes: %s", strings.Join(want, ", "), strings.Join(offered, "; "))
}

// cpus is "1 CPU", "4 CPUs".
func cpus(n int) string {
	if n == 1 {
		return "1 CPU"
	}
	return fmt.Sprintf("%d CPUs", n)
}

func less(a, b Class) bool {
	if a.CPUs != b.CPUs {
		return a.CPUs < b.CPUs
	}
	if a.Memory != b.Memory {
		return a.Memory < b.Memory
	}
	if a.Storage != b.Storage {
		return a.Storage < b.Storage
	}
	return a.GPUs < b.GPUs
}

// HumanBytes writes n bytes in the spec's units (powers of 1024) as
// people read them: "64 GB", "1.5 TB", "512 MB", "100 bytes".
func HumanBytes(n int64) string {
	units := []struct {
		name string
		size int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			v := strconv.FormatFloat(math.Floor(float64(n)/float64(u.size)*10)/10, 'f', -1, 64)
			return v + " " + u.name
		}
	}
	if n == 1 {
		return "1 byte"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// HostRequirementWarnings are the hostRequirements sizes that are not
// sizes, each with its position: read-configuration prints the file as
// the reference CLI does (which ignores them) and warns; creating an
// environment refuses them.
func (c *Config) HostRequirementWarnings() []Warning {
	hr, _ := c.Raw["hostRequirements"].(map[string]any)
	var out []Warning
	check := func(prop string, v any) {
		s, ok := v.(string)
		if !ok {
			return
		}
		if _, err := ParseSize(prop, s); err != nil {
			out = append(out, Warning{Pos: c.At(prop), Property: prop, Message: err.Error() + "; an environment with it is refused"})
		}
	}
	check("hostRequirements.memory", hr["memory"])
	check("hostRequirements.storage", hr["storage"])
	if g, ok := hr["gpu"].(map[string]any); ok {
		check("hostRequirements.gpu.memory", g["memory"])
	}
	return out
}
