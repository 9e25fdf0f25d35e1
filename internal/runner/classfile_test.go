package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestParseClasses: a classes file with comments and trailing commas
// defines several classes, each with its whole resource definition;
// what it leaves out takes the documented defaults.
func TestParseClasses(t *testing.T) {
	cs, err := ParseClasses([]byte(`{
  // Two classes on this runner.
  "classes": [
    {"id": "small", "cpus": 1, "cpuBurst": 2, "memory": "4GiB",},
    {
      "id": "large", "displayName": "Large", "cpus": 4, "memory": 17179869184,
      "memoryHigh": 80, "swap": "2GiB", "pids": -1, "disk": "100GiB",
      "ioReadBps": "400MiB", "ioWriteBps": "200MiB", "ioReadIops": 4000, "ioWriteIops": 2000,
      "egressPolicy": "allowlist", "egressAllow": ["192.0.2.0/24:443"], "egressRate": 100000000, "ingressRate": 5000,
    },
  ],
}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []*covev1.EnvironmentClass{
		{Id: "small", Cpus: 1, CpuBurst: 2, MemoryBytes: 4 << 30, Pids: DefaultClassPids, Runtime: "container", EgressPolicy: "allow-all"},
		{Id: "large", DisplayName: "Large", Cpus: 4, MemoryBytes: 16 << 30, MemoryHighPercent: 80, SwapBytes: 2 << 30, Pids: 0, DiskBytes: 100 << 30,
			IoReadBps: 400 << 20, IoWriteBps: 200 << 20, IoReadIops: 4000, IoWriteIops: 2000, Runtime: "container",
			EgressPolicy: "allowlist", EgressAllow: []string{"192.0.2.0/24:443"}, EgressRateBits: 100000000, IngressRateBits: 5000},
	}
	if len(cs) != len(want) {
		t.Fatalf("%d classes, want %d", len(cs), len(want))
	}
	for i := range want {
		if !proto.Equal(cs[i], want[i]) {
			t.Errorf("class %d:\n got %v\nwant %v", i, cs[i], want[i])
		}
	}
	// The runner applies what the file says.
	cl, err := newClassLimits(cs[:1], t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.byClass["small"]; got != (ClassLimits{}) {
		t.Errorf("small's limits %+v, want the defaults", got)
	}
}

// TestParseClassesRefuses: every mistake is refused with where it is and
// what is wanted; nothing is half-read.
func TestParseClassesRefuses(t *testing.T) {
	for name, c := range map[string]struct{ file, want string }{
		"not JSON":       {`{"classes": [`, "line 1"},
		"a list":         {`[]`, `line 1, column 1: want an object: {"classes": [...]}`},
		"unknown top":    {"{\n \"classes\": [],\n \"clases\": []}", `line 3, column 2: unknown key "clases"`},
		"no classes":     {`{}`, `no "classes" list`},
		"empty":          {`{"classes": []}`, "the list is empty"},
		"unknown key":    {"{\"classes\": [\n  {\"id\": \"a\", \"cpus\": 1, \"memory\": \"1GiB\",\n   \"cpu_burst\": 2}]}", `line 3, column 4: unknown key "cpu_burst"`},
		"no id":          {`{"classes": [{"cpus": 1}]}`, `class without an "id"`},
		"bad id":         {`{"classes": [{"id": "../etc", "cpus": 1, "memory": "1GiB"}]}`, `id "../etc": use lower-case`},
		"no memory":      {`{"classes": [{"id": "a", "cpus": 1}]}`, `class a: line 1, column 14: "memory" is required`},
		"decimal unit":   {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GB"}]}`, `class a: line 1, column 47: memory: "4GB": want bytes`},
		"fraction":       {`{"classes": [{"id": "a", "cpus": 1.5, "memory": "4GiB"}]}`, "cpus: want a whole number from 1 to 1024"},
		"string cpus":    {`{"classes": [{"id": "a", "cpus": "2", "memory": "4GiB"}]}`, "cpus: want a whole number"},
		"zero cpus":      {`{"classes": [{"id": "a", "cpus": 0, "memory": "4GiB"}]}`, "cpus: want a whole number from 1"},
		"burst below":    {`{"classes": [{"id": "a", "cpus": 2, "memory": "4GiB", "cpuBurst": 1}]}`, "class a: line 1, column 67: cpuBurst: 1 is below cpus 2"},
		"high 0":         {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "memoryHigh": 0}]}`, "memoryHigh: want a whole number from 1 to 100"},
		"negative swap":  {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "swap": -2}]}`, "-1 for unlimited"},
		"negative disk":  {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "disk": -1}]}`, "disk: want bytes"},
		"tiny memory":    {`{"classes": [{"id": "a", "cpus": 1, "memory": 4096}]}`, "want at least 1MiB"},
		"huge size":      {`{"classes": [{"id": "a", "cpus": 1, "memory": "99999999999TiB"}]}`, "memory:"},
		"policy":         {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "egressPolicy": "open"}]}`, `egressPolicy "open"`},
		"runtime":        {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "runtime": "vm"}]}`, `runtime "vm"`},
		"twice":          {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB"}, {"id": "a", "cpus": 2, "memory": "4GiB"}]}`, `class "a" is defined twice`},
		"key twice":      {`{"classes": [{"id": "a", "cpus": 1, "cpus": 2, "memory": "4GiB"}]}`, `"cpus" is set twice`},
		"allow not list": {`{"classes": [{"id": "a", "cpus": 1, "memory": "4GiB", "egressAllow": "10.0.0.0/8"}]}`, "egressAllow: want a list of strings"},
	} {
		_, err := ParseClasses([]byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	// Too many classes for the server.
	var b strings.Builder
	b.WriteString(`{"classes": [`)
	for i := range MaxClasses + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"id": "c` + strings.Repeat("x", i) + `", "cpus": 1, "memory": "1GiB"}`)
	}
	b.WriteString("]}")
	if _, err := ParseClasses([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d classes: %v", MaxClasses+1, err)
	}
}

func TestLoadClassesNamesTheFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "classes.jsonc")
	if err := os.WriteFile(f, []byte(`{"classes": [{"id": "a", "cpus": 1, "memory": "1GiB", "bogus": 1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadClasses(f); err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), `unknown key "bogus"`) {
		t.Errorf("LoadClasses: %v, want the file's name and the unknown key", err)
	}
	if _, err := LoadClasses(f + ".missing"); err == nil || !strings.Contains(err.Error(), "classes file") {
		t.Errorf("missing file: %v", err)
	}
}
