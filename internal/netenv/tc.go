package netenv

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// setRate shapes what link transmits to bps bits/s with a root TBF qdisc, or
// removes that qdisc when bps is 0.
//
// Rates are applied on transmit only: the host-side veth's transmit is what
// the environment receives, and the environment's eth0 transmit is what it
// sends. eth0's qdisc lives in the environment's namespace, which belongs to
// the host user namespace, so the environment's root cannot change it. (The
// policing alternative — an ingress qdisc with a police action — needs
// act_police, which kernels do not always have.)
func setRate(h *netlink.Handle, link netlink.Link, bps int64) error {
	if bps <= 0 {
		qs, err := h.QdiscList(link)
		if err != nil {
			return fmt.Errorf("list qdiscs of %s: %w", link.Attrs().Name, err)
		}
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() == "tbf" {
				if err := h.QdiscDel(q); err != nil {
					return fmt.Errorf("remove rate limit on %s: %w", link.Attrs().Name, err)
				}
			}
		}
		return nil
	}
	if err := h.QdiscReplace(tbf(link, bps)); err != nil {
		return fmt.Errorf("rate limit %s to %d bit/s: %w", link.Attrs().Name, bps, err)
	}
	return nil
}

func tbf(link netlink.Link, bps int64) *netlink.Tbf {
	rate := uint64(bps / 8) // bytes/s
	if rate == 0 {
		rate = 1
	}
	// Burst: 10 ms worth at the rate, at least 32 KiB so TSO-sized packets
	// pass. Queue: 50 ms worth plus the burst.
	burst := max(rate/100, 32<<10)
	limit := rate/20 + burst
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: link.Attrs().Index,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate:   rate,
		Limit:  uint32(min(limit, 1<<31)),
		Buffer: netlink.Xmittime(rate, uint32(min(burst, 1<<31))),
	}
}
