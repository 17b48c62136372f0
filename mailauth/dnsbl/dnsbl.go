package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/mailcluster/mailcluster/dnsclient"
)

// Resolver is the DNS the lists are asked through; *dnsclient.Resolver
// satisfies it. Errors must match dnsclient.ErrNotFound or
// dnsclient.ErrTemporary; any other error counts as temporary.
type Resolver interface {
	LookupIP(ctx context.Context, host string) ([]net.IP, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// MaxReason bounds the reason text kept from a list's TXT record.
const MaxReason = 200

// Listing is one list's verdict that the address is listed.
type Listing struct {
	Zone   string   // the list's zone, as configured
	Reason string   // the list's TXT text ("" when it has none), sanitised
	Codes  []net.IP // the A answers in 127/8 (which sub-list, on lists that say)
}

// ValidZone reports why zone cannot be a list's zone, or nil: what a
// configuration check calls before the first lookup.
func ValidZone(zone string) error {
	z := strings.Trim(strings.TrimSpace(zone), ".")
	if z == "" || len(z) > 253-64 {
		return fmt.Errorf("dnsbl: zone %q is not a domain name", zone)
	}
	for _, label := range strings.Split(z, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("dnsbl: zone %q is not a domain name", zone)
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return fmt.Errorf("dnsbl: zone %q is not a domain name", zone)
			}
		}
	}
	return nil
}

// QueryName is the name asked of zone for ip: the IPv4 octets, or the 32
// IPv6 nibbles, in reverse order, then the zone (RFC 5782 §2.1, §2.4).
// An IPv4-mapped IPv6 address is asked as IPv4.
func QueryName(ip net.IP, zone string) (string, error) {
	if err := ValidZone(zone); err != nil {
		return "", err
	}
	z := strings.Trim(strings.TrimSpace(zone), ".")
	var b strings.Builder
	if v4 := ip.To4(); v4 != nil {
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(v4[i])))
			b.WriteByte('.')
		}
	} else if v6 := ip.To16(); v6 != nil {
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[v6[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[v6[i]>>4])
			b.WriteByte('.')
		}
	} else {
		return "", errors.New("dnsbl: not an IP address")
	}
	b.WriteString(z)
	return b.String(), nil
}

// listedCode reports whether an A answer lists the address: in 127/8 but
// not in 127.255.255.0/24, the "query refused" answers.
func listedCode(a net.IP) bool {
	v4 := a.To4()
	return v4 != nil && v4[0] == 127 && !(v4[1] == 255 && v4[2] == 255)
}

type zoneResult struct {
	listing Listing
	listed  bool
	err     error
}

// Check asks each zone (concurrently) whether ip is listed and returns the
// listing of the first zone, in the order given, that lists it. err is set
// when no zone lists it and at least one could not be asked (a temporary
// DNS failure: errors.Is(err, dnsclient.ErrTemporary)), or when ip or a
// zone is malformed. Check waits for every zone's answer or ctx.
func Check(ctx context.Context, r Resolver, ip net.IP, zones []string) (Listing, bool, error) {
	names := make([]string, len(zones))
	for i, z := range zones {
		n, err := QueryName(ip, z)
		if err != nil {
			return Listing{}, false, err
		}
		names[i] = n
	}
	results := make([]chan zoneResult, len(zones))
	for i := range zones {
		results[i] = make(chan zoneResult, 1)
		go func() { results[i] <- checkZone(ctx, r, zones[i], names[i]) }()
	}
	var errs []error
	var found *Listing
	for i := range zones {
		res := <-results[i]
		switch {
		case res.listed && found == nil:
			found = &res.listing
		case res.err != nil:
			errs = append(errs, res.err)
		}
	}
	if found != nil {
		return *found, true, nil
	}
	if len(errs) > 0 {
		return Listing{}, false, errors.Join(errs...)
	}
	return Listing{}, false, nil
}

func checkZone(ctx context.Context, r Resolver, zone, name string) zoneResult {
	ips, err := r.LookupIP(ctx, name)
	if err != nil {
		if errors.Is(err, dnsclient.ErrNotFound) && !errors.Is(err, dnsclient.ErrTemporary) {
			return zoneResult{}
		}
		return zoneResult{err: fmt.Errorf("dnsbl %s: %w", zone, temporary(err))}
	}
	l := Listing{Zone: zone}
	for _, a := range ips {
		if listedCode(a) {
			l.Codes = append(l.Codes, a)
		}
	}
	if len(l.Codes) == 0 {
		return zoneResult{}
	}
	// The reason is a courtesy: without one the address is still listed.
	if txt, err := r.LookupTXT(ctx, name); err == nil && len(txt) > 0 {
		l.Reason = sanitize(strings.Join(txt, " "))
	}
	return zoneResult{listing: l, listed: true}
}

// temporary makes sure an error from the Resolver matches
// dnsclient.ErrTemporary, as Check promises.
func temporary(err error) error {
	if errors.Is(err, dnsclient.ErrTemporary) {
		return err
	}
	return errors.Join(dnsclient.ErrTemporary, err)
}

// sanitize keeps printable ASCII (other bytes become spaces), collapses
// white space and cuts to MaxReason bytes.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 4*MaxReason; i++ {
		c := s[i]
		if c < ' ' || c > '~' {
			c = ' '
		}
		b.WriteByte(c)
	}
	out := strings.Join(strings.Fields(b.String()), " ")
	if len(out) > MaxReason {
		out = out[:MaxReason]
	}
	return out
}
