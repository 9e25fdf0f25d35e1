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

// ChooseClass returns the smallest class (by CPUs, then memory, then
// storage) that meets req, or a user error naming what no class offers.
// A nil req fits any class; an optional GPU is not required.
func ChooseClass(req *HostRequirements, classes []Class) (string, error) {
	var r HostRequirements
	if req != nil {
		r = *req
	}
	mem := parseSize(r.Memory)
	storage := parseSize(r.Storage)
	gpus := 0
	if r.GPU.Required {
		gpus = max(1, r.GPU.Cores)
	}
	best := -1
	for i, c := range classes {
		if c.Disabled || c.CPUs < r.CPUs || c.Memory < mem || c.Storage < storage || c.GPUs < gpus {
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
	if r.CPUs > 0 {
		want = append(want, fmt.Sprintf("%d CPUs", r.CPUs))
	}
	if mem > 0 {
		want = append(want, fmt.Sprintf("%s memory", r.Memory))
	}
	if storage > 0 {
		want = append(want, fmt.Sprintf("%s storage", r.Storage))
	}
	if gpus > 0 {
		want = append(want, "a GPU")
	}
	if len(want) == 0 {
		return "", usererr.New("no environment class is available")
	}
	var offered []string
	for _, c := range classes {
		if !c.Disabled {
			offered = append(offered, fmt.Sprintf("%s (%d CPUs, %s memory, %s storage)", c.ID, c.CPUs, human(c.Memory), human(c.Storage)))
		}
	}
	if len(offered) == 0 {
		offered = []string{"none"}
	}
	return "", usererr.New("hostRequirements: no environment class has %s; classes: %s", strings.Join(want, ", "), strings.Join(offered, "; "))
}

// parseSize is ParseBytes, also accepting upper-case units ("4GB").
func parseSize(s string) int64 { return ParseBytes(strings.ToLower(strings.TrimSpace(s))) }

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

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dgb", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dmb", n>>20)
	}
	return strconv.FormatInt(n, 10)
}
