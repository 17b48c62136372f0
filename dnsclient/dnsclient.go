package dnsclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one exchange with one server when New gets 0.
const DefaultTimeout = 5 * time.Second

// maxCNAME is how many CNAME hops a lookup follows.
const maxCNAME = 8

var (
	// ErrNotFound: the name does not exist (NXDOMAIN) or has no record of
	// the type asked (NODATA). Error.NXDomain tells the two apart.
	ErrNotFound = errors.New("dnsclient: not found")
	// ErrTemporary: no server gave an answer (timeout, SERVFAIL, REFUSED,
	// a malformed reply, a network error); asking later may succeed.
	ErrTemporary = errors.New("dnsclient: temporary failure")
)

// Error describes a failed lookup. errors.Is(err, ErrNotFound) or
// errors.Is(err, ErrTemporary) holds for every error a lookup returns
// (a canceled context aside, which also matches ctx.Err()).
type Error struct {
	Name     string // the name asked, as given
	Type     string // "MX", "A", …
	NXDomain bool   // the name does not exist (as opposed to no records of Type)
	Server   string // the last server asked
	Reason   string // what went wrong, for logs
	Kind     error  // ErrNotFound or ErrTemporary
	cause    error  // a context error, if that ended the lookup
}

func (e *Error) Error() string {
	s := "dns " + e.Type + " " + e.Name + ": " + e.Reason
	if e.Server != "" {
		s += " (server " + e.Server + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound / ErrTemporary / context errors) work.
func (e *Error) Is(target error) bool {
	return target == e.Kind || (e.cause != nil && errors.Is(e.cause, target))
}

// Resolver sends queries to a fixed list of servers. It is safe for
// concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	cache   *cache // nil: every lookup asks a server
}

// New returns a resolver that asks servers (host:port, or a bare host for
// port 53) in order, each exchange bounded by timeout (0: DefaultTimeout).
// With no servers it fails: it never falls back to the system resolver.
func New(servers []string, timeout time.Duration) (*Resolver, error) {
	if len(servers) == 0 {
		return nil, errors.New("no DNS servers: set dns_servers (this resolver never falls back to the system's)")
	}
	r := &Resolver{timeout: timeout}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	for _, s := range servers {
		addr, err := normalizeServer(s)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, addr)
	}
	return r, nil
}

// normalizeServer turns "1.2.3.4", "::1", "[::1]:5353" or "1.2.3.4:53" into
// host:port. Servers are addresses, not names: resolving a name would need
// a resolver.
func normalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.Trim(s, "[]"), "53"
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("DNS server %q: want an IP address with an optional port, like 127.0.0.1:53", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("DNS server %q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}

// Servers returns the servers asked, as host:port.
func (r *Resolver) Servers() []string { return slices.Clone(r.servers) }

// SystemServers returns the nameservers of /etc/resolv.conf as host:port.
// Only cmd/mailcluster calls it, for the default of dns_servers.
func SystemServers() ([]string, error) { return serversFromFile("/etc/resolv.conf") }

func serversFromFile(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the system's DNS servers: %w", err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("read the system's DNS servers: no nameserver line in %s", path)
	}
	port := cc.Port
	if port == "" {
		port = "53"
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, port))
	}
	return out, nil
}

// MX is one mail exchanger. Host has no trailing dot, except the null MX
// (RFC 7505), whose Host is ".".
type MX struct {
	Host string
	Pref uint16
}

// Null reports whether this is a null MX: the domain accepts no mail.
func (m MX) Null() bool { return m.Host == "." }

// TLSA is one DANE record (RFC 6698).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte // the certificate association data
}

// answer is one successful exchange.
type answer struct {
	rrs       []dns.RR // records of the type asked, along the CNAME chain
	authentic bool     // AD bit
}

// LookupMX returns domain's MX records sorted by preference (ties keep the
// server's order). A null MX is kept as Host ".".
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	mx, _, err := r.LookupMXAuthentic(ctx, domain)
	return mx, err
}

// LookupMXAuthentic is LookupMX that also reports the AD bit: DANE applies
// to an MX host only when the MX answer itself was validated (RFC 7672
// §2.2.1).
func (r *Resolver) LookupMXAuthentic(ctx context.Context, domain string) ([]MX, bool, error) {
	a, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, err
	}
	out := make([]MX, 0, len(a.rrs))
	for _, rr := range a.rrs {
		mx := rr.(*dns.MX)
		out = append(out, MX{Host: trimDot(mx.Mx), Pref: mx.Preference})
	}
	slices.SortStableFunc(out, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return out, a.authentic, nil
}

// LookupIP returns host's IPv4 (A) then IPv6 (AAAA) addresses. It fails
// only when neither type gave an address: ErrTemporary if either lookup
// failed temporarily, else ErrNotFound.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	type res struct {
		a   answer
		err error
	}
	aaaa := make(chan res, 1)
	go func() {
		a, err := r.lookup(ctx, host, dns.TypeAAAA)
		aaaa <- res{a, err}
	}()
	a4, err4 := r.lookup(ctx, host, dns.TypeA)
	r6 := <-aaaa
	var out []net.IP
	for _, rr := range a4.rrs {
		out = append(out, rr.(*dns.A).A)
	}
	for _, rr := range r6.a.rrs {
		out = append(out, rr.(*dns.AAAA).AAAA)
	}
	if len(out) > 0 {
		return out, nil
	}
	if err4 != nil && !errors.Is(err4, ErrNotFound) {
		return nil, err4
	}
	if r6.err != nil && !errors.Is(r6.err, ErrNotFound) {
		return nil, r6.err
	}
	return nil, err4
}

// LookupTXT returns one string per TXT record, its character-strings
// joined without separators (as SPF, DKIM and DMARC read them).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(a.rrs))
	for _, rr := range a.rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupTLSA returns the TLSA records at name (e.g. "_25._tcp.mx.example.org")
// and whether the resolver vouched for them (the AD bit: it validated them
// with DNSSEC). When not authentic, DANE must not use them (RFC 7672 §2.2).
func (r *Resolver) LookupTLSA(ctx context.Context, name string) ([]TLSA, bool, error) {
	a, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, false, err
	}
	out := make([]TLSA, 0, len(a.rrs))
	for _, rr := range a.rrs {
		t := rr.(*dns.TLSA)
		data, derr := hex.DecodeString(t.Certificate)
		if derr != nil {
			return nil, false, &Error{Name: name, Type: "TLSA", Reason: "bad certificate data: " + derr.Error(), Kind: ErrTemporary}
		}
		out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return out, a.authentic, nil
}

// LookupAddr returns the names of ip (PTR), without trailing dots.
func (r *Resolver) LookupAddr(ctx context.Context, ip net.IP) ([]string, error) {
	if ip == nil {
		return nil, &Error{Name: "<nil>", Type: "PTR", Reason: "no address", Kind: ErrNotFound}
	}
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, &Error{Name: ip.String(), Type: "PTR", Reason: err.Error(), Kind: ErrNotFound}
	}
	a, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(a.rrs))
	for _, rr := range a.rrs {
		out = append(out, trimDot(rr.(*dns.PTR).Ptr))
	}
	return out, nil
}

func trimDot(s string) string {
	if s == "." {
		return s
	}
	return strings.TrimSuffix(s, ".")
}

// lookup asks for (name, qtype), following CNAMEs, and returns the records
// of qtype; from the cache when it holds a fresh answer.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (answer, error) {
	if r.cache == nil {
		return r.ask(ctx, name, qtype)
	}
	key := cacheKey{dns.CanonicalName(name), qtype}
	if a, err, ok := r.cache.get(key, name); ok {
		return a, err
	}
	a, err := r.ask(ctx, name, qtype)
	r.cache.put(key, a, err)
	return a, err
}

// ask is lookup without the cache.
func (r *Resolver) ask(ctx context.Context, name string, qtype uint16) (answer, error) {
	typ := dns.TypeToString[qtype]
	fail := func(kind error, nx bool, server, reason string) (answer, error) {
		return answer{}, &Error{Name: name, Type: typ, NXDomain: nx, Server: server, Reason: reason, Kind: kind}
	}
	if name == "" || len(name) > 253 {
		return fail(ErrNotFound, true, "", "not a domain name")
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return fail(ErrNotFound, true, "", "not a domain name")
	}
	qname := dns.CanonicalName(name)
	authentic := true
	for hop := 0; hop <= maxCNAME; hop++ {
		reply, server, err := r.exchange(ctx, qname, qtype)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Name, e.Type = name, typ
			}
			return answer{}, err
		}
		authentic = authentic && reply.AuthenticatedData
		switch reply.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return fail(ErrNotFound, true, server, "no such domain (NXDOMAIN)")
		default:
			// exchange already moved past SERVFAIL/REFUSED to the next server.
			return fail(ErrTemporary, false, server, "server answered "+dns.RcodeToString[reply.Rcode])
		}
		rrs, next := follow(qname, qtype, reply.Answer)
		if len(rrs) > 0 {
			return answer{rrs: rrs, authentic: authentic}, nil
		}
		if next == qname {
			return fail(ErrNotFound, false, server, "no "+typ+" records")
		}
		qname = next // a CNAME whose target the server did not include
	}
	return fail(ErrTemporary, false, "", "too many CNAMEs")
}

// follow walks the CNAME chain from qname through the answer section and
// returns the records of qtype at its end, and the name the chain ends at.
func follow(qname string, qtype uint16, rrs []dns.RR) ([]dns.RR, string) {
	name := qname
	for range maxCNAME + 1 {
		var out []dns.RR
		var cname string
		for _, rr := range rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) || h.Class != dns.ClassINET {
				continue
			}
			if h.Rrtype == qtype {
				out = append(out, rr)
			} else if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				cname = dns.CanonicalName(c.Target)
			}
		}
		if len(out) > 0 || cname == "" {
			return out, name
		}
		name = cname
	}
	return nil, name
}

// exchange asks each server in turn until one answers with NOERROR or
// NXDOMAIN. A truncated UDP reply is asked again over TCP.
func (r *Resolver) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, string, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	// Ask for the resolver's DNSSEC verdict (RFC 6840 §5.7) without the
	// signatures themselves.
	m.AuthenticatedData = true
	m.SetEdns0(1232, false)
	var last *Error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, server, &Error{Server: server, Reason: err.Error(), Kind: ErrTemporary, cause: err}
		}
		reply, err := r.exchangeOne(ctx, m, server, "udp")
		if err == nil && reply.Truncated {
			reply, err = r.exchangeOne(ctx, m, server, "tcp")
		}
		if err != nil {
			last = &Error{Server: server, Reason: err.Error(), Kind: ErrTemporary}
			if ctx.Err() != nil {
				last.cause = ctx.Err()
				return nil, server, last
			}
			continue
		}
		if reply.Id != m.Id || reply.Opcode != dns.OpcodeQuery {
			last = &Error{Server: server, Reason: "mismatched reply", Kind: ErrTemporary}
			continue
		}
		if reply.Rcode != dns.RcodeSuccess && reply.Rcode != dns.RcodeNameError {
			last = &Error{Server: server, Reason: "server answered " + dns.RcodeToString[reply.Rcode], Kind: ErrTemporary}
			continue
		}
		return reply, server, nil
	}
	return nil, last.Server, last
}

func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, server, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout, UDPSize: 1232}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The library bounds the read by Timeout only; a canceled context must
	// end it too.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	reply, _, err := c.ExchangeWithConn(m, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return reply, err
}
