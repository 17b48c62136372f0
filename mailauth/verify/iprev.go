package verify

import (
	"context"
	"errors"
	"net"

	"github.com/mailcluster/mailcluster/dnsclient"
)

// checkIPRev looks up the client's PTR names and passes when one of them
// (at most maxPTRNames) resolves back to the address (RFC 8601 §3).
func (c *Checker) checkIPRev(ctx context.Context, ip net.IP) IPRevResult {
	res := IPRevResult{IP: ip}
	if ip.To16() == nil {
		res.Result, res.Reason = PermError, "no client address"
		return res
	}
	names, err := c.r.LookupAddr(ctx, ip)
	if err != nil {
		if notFound(err) {
			res.Result, res.Reason = Fail, "no PTR record"
		} else {
			res.Result, res.Reason = TempError, "PTR lookup: "+err.Error()
		}
		return res
	}
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	temporary := false
	for _, name := range names {
		if !validDomain(name) {
			continue
		}
		ips, err := c.r.LookupIP(ctx, name)
		if err != nil {
			temporary = temporary || !notFound(err)
			continue
		}
		for _, a := range ips {
			if a.Equal(ip) {
				res.Result, res.Name = Pass, name
				return res
			}
		}
	}
	if temporary {
		res.Result, res.Reason = TempError, "forward lookup of a PTR name failed"
		return res
	}
	res.Result, res.Reason = Fail, "no PTR name resolves to the address"
	return res
}

// notFound reports a definite "no such record" from the Resolver.
func notFound(err error) bool {
	return errors.Is(err, dnsclient.ErrNotFound) && !errors.Is(err, dnsclient.ErrTemporary)
}
