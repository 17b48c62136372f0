package dnsclient

import (
	"context"
	"slices"

	"github.com/miekg/dns"
)

// SRV is one service record (RFC 2782). Target has no trailing dot, except
// "." (RFC 2782: the service is decidedly not offered at this domain).
type SRV struct {
	Target   string
	Port     uint16
	Priority uint16
	Weight   uint16
}

// LookupSRV returns the SRV records at name (e.g. "_imaps._tcp.example.org"),
// sorted by priority (ties keep the server's order).
func (r *Resolver) LookupSRV(ctx context.Context, name string) ([]SRV, error) {
	a, err := r.lookup(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	out := make([]SRV, 0, len(a.rrs))
	for _, rr := range a.rrs {
		s := rr.(*dns.SRV)
		out = append(out, SRV{Target: trimDot(s.Target), Port: s.Port, Priority: s.Priority, Weight: s.Weight})
	}
	slices.SortStableFunc(out, func(a, b SRV) int { return int(a.Priority) - int(b.Priority) })
	return out, nil
}
