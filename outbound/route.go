package outbound

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
)

// route is where one Send may go: the hosts in the order to try.
type route struct {
	hosts    []string
	implicit bool // no MX: the domain itself (RFC 5321 §5.1)
}

// normHost lower-cases a DNS name and drops its trailing dot.
func normHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
}

// lookupRoute finds the hosts of domain by RFC 5321 §5.1: MX records by
// preference (shuffled among equal ones), else the domain itself when it
// has addresses. A null MX (RFC 7505) and a domain that does not exist are
// permanent outcomes; a DNS failure is temporary.
func lookupRoute(ctx context.Context, r Resolver, domain string) (route, *outcome) {
	mxs, err := r.LookupMX(ctx, domain)
	if err != nil && !errors.Is(err, ErrNotFound) {
		o := temporary(451, "4.4.3", "", "MX lookup for %s failed: %v", domain, err)
		return route{}, &o
	}
	var real []MX
	for _, mx := range mxs {
		if h := normHost(mx.Host); h != "" {
			real = append(real, MX{Host: h, Pref: mx.Pref})
		}
	}
	if len(real) == 0 {
		if len(mxs) > 0 {
			// Only "." targets: a null MX (mixed with real hosts, the dots are ignored).
			o := permanent(556, "5.1.10", "", "domain %s does not accept mail (null MX, RFC 7505)", domain)
			return route{}, &o
		}
		// No MX: the domain itself, if it has an address.
		ips, err := r.LookupIP(ctx, domain)
		switch {
		case errors.Is(err, ErrNotFound) || (err == nil && len(ips) == 0):
			o := permanent(550, "5.1.2", "", "domain %s has no MX and no address records", domain)
			return route{}, &o
		case err != nil:
			o := temporary(451, "4.4.3", "", "address lookup for %s failed: %v", domain, err)
			return route{}, &o
		}
		return route{hosts: []string{normHost(domain)}, implicit: true}, nil
	}
	return route{hosts: orderMX(real)}, nil
}

// orderMX sorts by preference and shuffles each run of equal preferences
// (RFC 5321 §5.1: spread the load over equally preferred hosts).
func orderMX(mxs []MX) []string {
	slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	for i := 0; i < len(mxs); {
		j := i + 1
		for j < len(mxs) && mxs[j].Pref == mxs[i].Pref {
			j++
		}
		run := mxs[i:j]
		rand.Shuffle(len(run), func(a, b int) { run[a], run[b] = run[b], run[a] })
		i = j
	}
	hosts := make([]string, 0, len(mxs))
	seen := map[string]bool{}
	for _, mx := range mxs {
		if !seen[mx.Host] {
			seen[mx.Host] = true
			hosts = append(hosts, mx.Host)
		}
	}
	return hosts
}

// interleave orders addresses IPv4 and IPv6 in turn, starting with the
// family of the first one (RFC 8305 §4), so one broken family does not
// hide the other.
func interleave(ips []net.IP) []net.IP {
	var v4, v6 []net.IP
	for _, ip := range ips {
		if ip.To4() != nil {
			v4 = append(v4, ip)
		} else if ip.To16() != nil {
			v6 = append(v6, ip)
		}
	}
	first, second := v4, v6
	if len(ips) > 0 && ips[0].To4() == nil {
		first, second = v6, v4
	}
	out := make([]net.IP, 0, len(v4)+len(v6))
	for i := 0; i < len(first) || i < len(second); i++ {
		if i < len(first) {
			out = append(out, first[i])
		}
		if i < len(second) {
			out = append(out, second[i])
		}
	}
	return out
}
