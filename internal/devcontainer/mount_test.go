package devcontainer

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestParseMount(t *testing.T) {
	vol := func(src, dst string, ro bool) Mount {
		return Mount{Type: "volume", Source: src, Target: dst, ReadOnly: ro}
	}
	for _, tt := range []struct {
		in   string
		want Mount
	}{
		{"type=volume,source=x,target=/y", vol("x", "/y", false)},
		// readonly: bare, its alias, and as a boolean.
		{"type=volume,source=x,target=/y,readonly", vol("x", "/y", true)},
		{"type=volume,source=x,target=/y,ro", vol("x", "/y", true)},
		{"type=volume,source=x,target=/y,readonly=true", vol("x", "/y", true)},
		{"type=volume,source=x,target=/y,readonly=1", vol("x", "/y", true)},
		{"type=volume,source=x,target=/y,readonly=false", vol("x", "/y", false)},
		{"type=volume,source=x,target=/y,ro=0", vol("x", "/y", false)},
		// Aliases of source and target.
		{"type=volume,src=x,dst=/y", vol("x", "/y", false)},
		{"type=volume,src=x,destination=/y", vol("x", "/y", false)},
		// The type defaults to volume (Docker); keys and the type are
		// case-insensitive, blanks around keys are dropped.
		{"source=x,target=/y", vol("x", "/y", false)},
		{"Type=TMPFS, Target=/t", Mount{Type: "tmpfs", Target: "/t"}},
		// Quoted: a whole field (Docker's CSV) or a value (the reference
		// CLI's workspaceMount); "" in quotes is a quote.
		{`"source=/a,b",target=/c`, Mount{Type: "volume", Source: "/a,b", Target: "/c"}},
		{`type=bind,source="/a,b",target="/c d"`, Mount{Type: "bind", Source: "/a,b", Target: "/c d"}},
		{`"source=a""b",target=/c`, Mount{Type: "volume", Source: `a"b`, Target: "/c"}},
		// Docker options cove does not apply are accepted.
		{"type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770", Mount{Type: "tmpfs", Target: "/t"}},
		{"type=volume,source=x,target=/y,volume-nocopy,consistency=cached", vol("x", "/y", false)},
		{"type=volume,source=x,target=/y,external=true", Mount{Type: "volume", Source: "x", Target: "/y", External: true}},
	} {
		got, err := ParseMount(tt.in)
		tt.want.Orig = tt.in
		if err != nil || got != tt.want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseMountRefuses(t *testing.T) {
	for _, tt := range []struct {
		in, msg string
		target  string // still parsed
	}{
		{"type=volume,foo=bar,target=/x", `unknown option "foo"`, "/x"},
		{"type=volume,target=/x,readonly=maybe", `readonly="maybe" is not true or false`, "/x"},
		{"type=volume,target=/x,ro=", `ro="" is not true or false`, "/x"},
		{"type=volume,target=/x,source", `"source" must be a key=value pair`, "/x"},
		{"type=volume,target=/x,=y", `"=y" has no key`, "/x"},
		{`type=volume,source="/a,target=/b`, "a quote is not closed", ""},
	} {
		got, err := ParseMount(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
			t.Errorf("ParseMount(%q) = %v, want an error naming the mount and %q", tt.in, err, tt.msg)
		}
		if got.Target != tt.target {
			t.Errorf("ParseMount(%q).Target = %q, want %q", tt.in, got.Target, tt.target)
		}
	}
}

// A mount a user wrote wrong is reported with its position, by the same
// check that reports the rest, not dropped or half-applied.
func TestCheckReportsBadMounts(t *testing.T) {
	c, _, err, file := load(t, "{\"image\": \"a\",\n \"mounts\": [\"type=volume,source=ok,target=/ok\",\n  \"type=volume,foo=bar,target=/x\"]}", LoadOptions{})
	if err == nil {
		err = c.Check(Allow{})
	}
	msg, ok := usererr.Message(err)
	if want := file + `:3:3: mounts[1]: mount "type=volume,foo=bar,target=/x": unknown option "foo"`; !ok || !strings.Contains(msg, want) {
		t.Errorf("Check = %v, want a user error containing %q", err, want)
	}
}

func TestMountJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Mount
	}{
		{`"type=volume,source=x,target=/y,readonly"`, Mount{Type: "volume", Source: "x", Target: "/y", ReadOnly: true, Orig: "type=volume,source=x,target=/y,readonly"}},
		{`{"type":"volume","source":"x","target":"/y","readonly":true}`, Mount{Type: "volume", Source: "x", Target: "/y", ReadOnly: true}},
		{`{"type":"volume","source":"x","target":"/y","external":true}`, Mount{Type: "volume", Source: "x", Target: "/y", External: true}},
		{`"type=volume,bogus=1,target=/y"`, Mount{Type: "volume", Target: "/y", Orig: "type=volume,bogus=1,target=/y",
			Problem: `mount "type=volume,bogus=1,target=/y": unknown option "bogus" (use type, source, target, readonly)`}},
	} {
		var m Mount
		if err := json.Unmarshal([]byte(tt.in), &m); err != nil || m != tt.want {
			t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", tt.in, m, err, tt.want)
			continue
		}
		// Written and read back, nothing is lost (readonly included).
		b, err := json.Marshal(m)
		var back Mount
		if err != nil || json.Unmarshal(b, &back) != nil || back != m {
			t.Errorf("round trip of %s: %s, %+v, %v", tt.in, b, back, err)
		}
	}
}
