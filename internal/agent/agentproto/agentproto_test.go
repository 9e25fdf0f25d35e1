package agentproto

import (
	"encoding/json"
	"testing"
)

func TestDialAddr(t *testing.T) {
	for p, addr := range map[Port]string{
		{Port: 3000, Address: "::"}:        "[::1]:3000",
		{Port: 8080, Address: "0.0.0.0"}:   "127.0.0.1:8080",
		{Port: 8081, Address: ""}:          "127.0.0.1:8081",
		{Port: 5001, Address: "10.0.2.15"}: "10.0.2.15:5001",
		{Port: 9000, Address: "::1"}:       "[::1]:9000",
	} {
		if got := p.DialAddr(); got != addr {
			t.Errorf("%v.DialAddr() = %q, want %q", p, got, addr)
		}
	}
}

// TestPortWireFormat pins the ports stream's JSON: agents and runners of
// different versions exchange it.
func TestPortWireFormat(t *testing.T) {
	b, err := json.Marshal([]Port{{Port: 3000, Address: "::"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[{"port":3000,"address":"::"}]`; got != want {
		t.Errorf("ports line %s, want %s", got, want)
	}
}

func TestValidProbe(t *testing.T) {
	for _, v := range []string{"", ProbeNone, ProbeLoginShell, ProbeInteractiveShell, ProbeLoginInteractiveShell} {
		if !ValidProbe(v) {
			t.Errorf("ValidProbe(%q) = false", v)
		}
	}
	for _, v := range []string{"bogus", "LOGINSHELL", "loginShell ", "none\n"} {
		if ValidProbe(v) {
			t.Errorf("ValidProbe(%q) = true", v)
		}
	}
}
