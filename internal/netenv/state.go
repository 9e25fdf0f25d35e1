package netenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/covedev/cove/internal/atomicfile"
)

// envState is what is persisted per environment.
type envState struct {
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname"`
	Policy   Policy     `json:"policy"`
}

type state struct {
	path string
	Envs map[string]*envState `json:"envs"`
}

func loadState(path string) (*state, error) {
	st := &state{path: path, Envs: map[string]*envState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read network state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("parse network state %s: %w", path, err)
	}
	if st.Envs == nil {
		st.Envs = map[string]*envState{}
	}
	return st, nil
}

func (st *state) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(st.path, b, 0o600)
}

// allocate returns the lowest free address in subnet after the bridge's
// (reserved) first address, excluding the broadcast address.
func (st *state) allocate(subnet netip.Prefix, bridge netip.Addr) (netip.Addr, error) {
	used := make(map[netip.Addr]bool, len(st.Envs))
	for _, e := range st.Envs {
		used[e.IP] = true
	}
	for a := bridge.Next(); subnet.Contains(a); a = a.Next() {
		if !subnet.Contains(a.Next()) {
			break // broadcast
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address in %s", subnet)
}
