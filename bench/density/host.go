package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
)

// Host-side overhead per environment that belongs to no environment's
// cgroup: the runner's child processes, its goroutines, its nftables
// rules.

// procChildCPU is the CPU time of pid's waited-for children (cutime +
// cstime in /proc/PID/stat): the runc, git and other processes the runner
// runs, which neither its own CPU figure nor an environment's cgroup counts.
func procChildCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	d, err := parseChildCPU(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// parseChildCPU reads cutime + cstime (fields 16 and 17 of proc(5)) from a
// /proc/PID/stat line, in clock ticks of 1/100 s (USER_HZ, 100 on every
// Linux architecture Go supports).
func parseChildCPU(b []byte) (time.Duration, error) {
	// The command may contain spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command field")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")" comes state, field 3; cutime and cstime are 16 and 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("%d fields after the command", len(f))
	}
	var ticks int64
	for _, s := range f[13:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("child CPU %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// goroutines reads go_goroutines from the runner's Prometheus endpoint.
func goroutines(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("runner metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("runner metrics: %s", resp.Status)
	}
	return parseGoroutines(bufio.NewScanner(resp.Body))
}

func parseGoroutines(sc *bufio.Scanner) (int, error) {
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("go_goroutines %q: %w", v, err)
			}
			return int(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("runner metrics: %w", err)
	}
	return 0, fmt.Errorf("runner metrics: no go_goroutines")
}

// nftRules counts the rules in the runner's nftables tables named table
// (inet and bridge families) in the host's network namespace.
func nftRules(table string) (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("nftables: %w", err)
	}
	n := 0
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return 0, fmt.Errorf("nftables chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != table {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return 0, fmt.Errorf("nftables rules of %s: %w", ch.Name, err)
			}
			n += len(rules)
		}
	}
	return n, nil
}

// hostCounts is what the runner holds for its environments at one moment.
type hostCounts struct {
	goroutines, rules int
}

func countHost(ctx context.Context, metricsAddr, table string) (hostCounts, error) {
	var h hostCounts
	var err error
	if h.goroutines, err = goroutines(ctx, metricsAddr); err != nil {
		return h, err
	}
	h.rules, err = nftRules(table)
	return h, err
}
