package netenv

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestParsePolicy(t *testing.T) {
	got, err := parsePolicy(Policy{Egress: EgressAllowlist, Allow: []string{"192.0.2.0/24:443", "198.51.100.7", "203.0.113.9/16"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []allowEntry{
		{netip.MustParsePrefix("192.0.2.0/24"), 443},
		{netip.MustParsePrefix("198.51.100.7/32"), 0},
		{netip.MustParsePrefix("203.0.0.0/16"), 0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, p := range []Policy{
		{Egress: "open-all"},
		{Egress: EgressAllowlist, Allow: []string{"not-a-cidr"}},
		{Egress: EgressAllowlist, Allow: []string{"192.0.2.0/24:99999"}},
		{Egress: EgressAllowlist, Allow: []string{"2001:db8::/32"}},
		{EgressRate: -1},
	} {
		_, err := parsePolicy(p)
		if _, ok := usererr.Message(err); !ok {
			t.Errorf("policy %+v: got %v, want a user error", p, err)
		}
	}
	for _, p := range []Policy{{}, {Egress: EgressAllowAll}, {Egress: EgressDenyPrivate}} {
		if _, err := parsePolicy(p); err != nil {
			t.Errorf("policy %+v: %v", p, err)
		}
	}
}

func TestAllocate(t *testing.T) {
	st := &state{Envs: map[string]*envState{}}
	subnet := netip.MustParsePrefix("10.0.0.0/29") // .1 bridge, .2-.6 envs, .7 broadcast
	bridge := netip.MustParseAddr("10.0.0.1")
	var got []string
	for i := range 5 {
		a, err := st.allocate(subnet, bridge)
		if err != nil {
			t.Fatal(err)
		}
		st.Envs[string(rune('a'+i))] = &envState{IP: a}
		got = append(got, a.String())
	}
	if want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}; !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	if a, err := st.allocate(subnet, bridge); err == nil {
		t.Fatalf("allocated %s from a full subnet", a)
	}
	delete(st.Envs, "b")
	if a, _ := st.allocate(subnet, bridge); a.String() != "10.0.0.3" {
		t.Fatalf("released address not reused: %s", a)
	}
}

func TestStatePersists(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{StateDir: dir, DNSUpstreams: []string{"127.0.0.1:53"}})
	if err != nil {
		t.Fatal(err)
	}
	m.st.Envs["x"] = &envState{IP: netip.MustParseAddr("10.213.0.2"), Policy: Policy{Egress: EgressDenyPrivate, EgressRate: 5}}
	if err := m.st.save(); err != nil {
		t.Fatal(err)
	}
	m2, err := New(Config{StateDir: dir, DNSUpstreams: []string{"127.0.0.1:53"}})
	if err != nil {
		t.Fatal(err)
	}
	if e := m2.st.Envs["x"]; e == nil || e.IP != m.st.Envs["x"].IP || e.Policy.Egress != EgressDenyPrivate || e.Policy.EgressRate != 5 {
		t.Fatalf("reloaded %+v", m2.st.Envs)
	}
	if m2.BridgeIP().String() != "10.213.0.1" {
		t.Fatalf("bridge ip %s", m2.BridgeIP())
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []Config{
		{StateDir: dir, Bridge: "a-very-long-bridge-name"},
		{StateDir: dir, Subnet: netip.MustParsePrefix("10.0.0.0/30")},
		{StateDir: dir, Subnet: netip.MustParsePrefix("fd00::/64")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestHostVethName(t *testing.T) {
	a, b := hostVethName("env-a"), hostVethName("env-b")
	if a == b || len(a) > 15 || a[:len(hostVethPrefix)] != hostVethPrefix || a != hostVethName("env-a") {
		t.Fatalf("names %q %q", a, b)
	}
}

func TestHostNameservers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# comment\nnameserver 192.0.2.53\nsearch example\nnameserver fe80::1%eth0\nnameserver bogus\n"
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got := hostNameservers(p)
	if want := []string{"192.0.2.53:53", "[fe80::1%eth0]:53"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
