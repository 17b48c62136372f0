package outbound

import (
	"context"
	"errors"
	"net"
)

// Resolver is the DNS the client needs. It matches the methods of
// dnsclient.Resolver (OUTBOUND.md §B); the caller adapts the record types.
// Every name the client resolves goes through it, the MTA-STS policy host
// included: the system resolver is never used.
type Resolver interface {
	// LookupMX returns the MX records of domain, sorted by preference; a
	// null MX keeps its "." target. NXDOMAIN or no records: ErrNotFound.
	LookupMX(ctx context.Context, domain string) ([]MX, error)
	// LookupIP returns the A and AAAA addresses of host.
	LookupIP(ctx context.Context, host string) ([]net.IP, error)
	// LookupTXT returns the TXT strings at name.
	LookupTXT(ctx context.Context, name string) ([]string, error)
	// LookupTLSA returns the TLSA records at name; authentic is true when
	// the answer was DNSSEC-validated (the AD bit).
	LookupTLSA(ctx context.Context, name string) (recs []TLSA, authentic bool, err error)
}

// MX is one MX record.
type MX struct {
	Host string
	Pref uint16
}

// TLSA is one TLSA record (RFC 6698): certificate usage, selector, matching
// type and the association data.
type TLSA struct {
	Usage        uint8
	Selector     uint8
	MatchingType uint8
	Data         []byte
}

// The Resolver's sentinel errors: a resolver wraps its errors so that
// errors.Is finds one of these (the caller maps dnsclient's errors).
var (
	// ErrNotFound: NXDOMAIN, or the name has no records of that type.
	ErrNotFound = errors.New("outbound: DNS name or records not found")
	// ErrTemporary: SERVFAIL, timeout, no answer; retry later.
	ErrTemporary = errors.New("outbound: temporary DNS failure")
)
