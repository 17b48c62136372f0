package verify

import (
	"context"
	"errors"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
)

// netError turns a Resolver error into the *net.DNSError the SPF and DKIM
// libraries inspect (they type-assert, not errors.Is): not found becomes
// IsNotFound (SPF: a void lookup, "none"), everything else IsTemporary
// (SPF: temperror; DKIM: temperror), so an unknown failure is never
// mistaken for a definite "no record".
func netError(name string, err error) error {
	if err == nil {
		return nil
	}
	if notFound(err) {
		return &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
	}
	timeout := errors.Is(err, context.DeadlineExceeded)
	return &net.DNSError{Err: "temporary failure: " + err.Error(), Name: name, IsTemporary: true, IsTimeout: timeout}
}

// spfResolver is the spf.DNSResolver the SPF library asks: every method
// goes to our Resolver.
type spfResolver struct{ r Resolver }

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, err := s.r.LookupTXT(ctx, name)
	return txt, netError(name, err)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := s.r.LookupMX(ctx, name)
	if err != nil {
		return nil, netError(name, err)
	}
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx.Null() {
			continue // a null MX names no host (RFC 7505)
		}
		out = append(out, &net.MX{Host: mx.Host + ".", Pref: mx.Pref})
	}
	return out, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := s.r.LookupIP(ctx, host)
	if err != nil {
		return nil, netError(host, err)
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: ip})
	}
	return out, nil
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, &net.DNSError{Err: "not an IP address", Name: addr, IsNotFound: true}
	}
	names, err := s.r.LookupAddr(ctx, ip)
	if err != nil {
		return nil, netError(addr, err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + "."
	}
	return out, nil
}

// checkSPF checks the MAIL FROM identity, or the HELO identity for the
// null sender (RFC 7208 §2.3, §2.4).
func (c *Checker) checkSPF(ctx context.Context, ip net.IP, helo, mailFrom string) SPFResult {
	mailFrom = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(mailFrom), "<"), ">")
	helo = strings.TrimSpace(helo)
	res := SPFResult{MailFrom: mailFrom, Helo: helo, Identity: "mailfrom"}
	sender := mailFrom
	at := strings.LastIndexByte(mailFrom, '@')
	if at >= 0 {
		res.Domain = safeDomain(mailFrom[at+1:])
		sender = mailFrom[:at+1] + res.Domain
	} else {
		// The null sender (or one without a domain): the HELO name speaks
		// for itself as postmaster@helo.
		res.Identity = "helo"
		res.Domain = safeDomain(helo)
		sender = "postmaster@" + res.Domain
	}
	if res.Domain == "" {
		// An address literal HELO or a malformed domain: nothing to look up.
		res.Result, res.Reason = None, "no domain to check"
		return res
	}
	if ip.To16() == nil {
		res.Result, res.Reason = PermError, "no client address"
		return res
	}
	r, err := spf.CheckHostWithSender(ip, helo, sender,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{c.r}))
	res.Result = string(r)
	if r == spf.TempError || r == spf.PermError {
		res.Reason = "spf: " + errString(err)
	}
	switch res.Result {
	case None, Neutral, Pass, Fail, SoftFail, TempError, PermError:
	default:
		res.Result, res.Reason = PermError, "unknown SPF result"
	}
	return res
}

func errString(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}
