package runner

import (
	"strings"
	"testing"
)

// TestClassTimeoutCaps: a class may cap its environments' inactivity
// timeout and lifetime with duration strings; 0 means none; what cannot
// be a cap is refused with where and what is wanted.
func TestClassTimeoutCaps(t *testing.T) {
	cs, err := ParseClasses([]byte(`{"classes": [
  {"id": "a", "cpus": 1, "memory": "1GiB", "maxInactivity": "2h", "maxLifetime": "12h30m"},
  {"id": "b", "cpus": 1, "memory": "1GiB", "maxInactivity": 0},
]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := cs[0]; a.MaxInactivitySeconds != 7200 || a.MaxLifetimeSeconds != 45000 {
		t.Errorf("class a: inactivity %d lifetime %d", a.MaxInactivitySeconds, a.MaxLifetimeSeconds)
	}
	if b := cs[1]; b.MaxInactivitySeconds != 0 || b.MaxLifetimeSeconds != 0 {
		t.Errorf("class b: inactivity %d lifetime %d", b.MaxInactivitySeconds, b.MaxLifetimeSeconds)
	}
	for _, bad := range []string{`"-1h"`, `"500ms"`, `"400d"`, `"9000h"`, `7200`, `"soon"`, `true`} {
		_, err := ParseClasses([]byte(`{"classes": [{"id": "a", "cpus": 1, "memory": "1GiB", "maxLifetime": ` + bad + `}]}`))
		if err == nil || !strings.Contains(err.Error(), "maxLifetime") || !strings.Contains(err.Error(), `such as "30m"`) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("maxLifetime %s: %v", bad, err)
		}
	}
}
