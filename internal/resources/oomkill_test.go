package resources

import (
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
)

func TestParseOOMKill(t *testing.T) {
	for _, c := range []struct {
		name, rec string
		want      OOMKill
		ok        bool
	}{
		{"dmesg line", "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=hog,mems_allowed=0,oom_memcg=/cove/env1,task_memcg=/cove/env1,task=dd,pid=2211,uid=-947692032",
			OOMKill{Cgroup: "/cove/env1", Task: "dd", PID: 2211}, true},
		{"kmsg record", "3,1234,23728837585,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/cove/env1,task_memcg=/cove/env1/db,task=postgres,pid=77,uid=0\n",
			OOMKill{Cgroup: "/cove/env1", Task: "postgres", PID: 77}, true},
		// The process names itself to confuse the reader: the last ",pid="
		// is the kernel's.
		{"hostile task name", "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/cove/env1,task_memcg=/cove/env1,task=a,pid=1,x,pid=9,uid=0",
			OOMKill{Cgroup: "/cove/env1", Task: "a,pid=1,x", PID: 9}, true},
		// A cgroup made inside environment 1 named to look like another:
		// still environment 1's path first.
		{"hostile cgroup name", "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/cove/env1/x,oom_memcg=/cove/env2,task_memcg=/cove/env1/x,task=sh,pid=5,uid=0",
			OOMKill{Cgroup: "/cove/env1/x,oom_memcg=/cove/env2", Task: "sh", PID: 5}, true},
		{"host-wide OOM", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=java,pid=3,uid=0", OOMKill{}, false},
		{"other record", "6,1,2,-;eth0: link up", OOMKill{}, false},
		{"no pid", "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a,task=x", OOMKill{}, false},
	} {
		got, ok := ParseOOMKill(c.rec)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: ParseOOMKill = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	g := testParent(t, "group") + "/group"
	if err := Create(g, Limits{MemoryBytes: 96 << 20}); err != nil {
		t.Fatal(err)
	}
	if n, err := MemoryLimit(g); err != nil || n != 96<<20 {
		t.Errorf("MemoryLimit = %d, %v; want %d", n, err, 96<<20)
	}
	if cgroups.Mode() == cgroups.Unified {
		return
	}
	if err := Create(g, Limits{}); err != nil {
		t.Fatal(err)
	}
	if n, err := MemoryLimit(g); err != nil || n != 0 {
		t.Errorf("MemoryLimit without a limit = %d, %v; want 0", n, err)
	}
}

// FuzzParseOOMKill: kernel log records carry names chosen inside
// environments; reading them never panics and a kill always has an
// absolute cgroup path.
func FuzzParseOOMKill(f *testing.F) {
	f.Add("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=hog,mems_allowed=0,oom_memcg=/cove/env1,task_memcg=/cove/env1,task=dd,pid=2211,uid=0")
	f.Add("3,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a,task=,pid=,pid=1")
	f.Add("oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=relative,task_memcg=/a,task=x,pid=1")
	f.Fuzz(func(t *testing.T, rec string) {
		k, ok := ParseOOMKill(rec)
		if ok && !strings.HasPrefix(k.Cgroup, "/") {
			t.Errorf("ParseOOMKill(%q) = %+v: cgroup not absolute", rec, k)
		}
	})
}
