package simnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Failure makes the DNS answer every query for a name in a broken way.
type Failure int

const (
	NoFailure Failure = iota
	NXDomain          // the name does not exist
	ServFail          // the server fails (SERVFAIL): a temporary error
	Refused           // the server refuses (REFUSED)
	Drop              // no answer at all: the client times out
)

// WildcardA is the address the wildcard gives every name it answers for.
const WildcardA = "127.0.0.1"

// Query is one question the DNS was asked.
type Query struct {
	Name string // lower case, no trailing dot
	Type string // "MX", "A", …
}

const maxQueryLog = 1000

type rrKey struct {
	name  string // canonical: lower case, trailing dot
	rtype uint16
}

// DNS is an authoritative-for-everything DNS server on loopback (UDP and
// TCP on one port) with a table the owner edits while it runs. It answers
// as a recursive resolver would (RA set, CNAMEs followed), so a stub
// resolver can be pointed at it.
type DNS struct {
	addr     string
	udp, tcp *dns.Server

	mu        sync.Mutex
	records   map[rrKey][]dns.RR
	names     map[string]int // how many record sets a name has (NODATA vs NXDOMAIN)
	failures  map[string]Failure
	authentic map[string]bool
	wildcard  string // canonical MX target for names not in the table; "" = NXDOMAIN
	queries   []Query
}

// NewDNS starts a DNS server on addr (a loopback host:port; "" picks a
// free port on 127.0.0.1). It serves until Close.
func NewDNS(addr string) (*DNS, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	return NewDNSOn(pc, ln), nil
}

// NewDNSOn serves on sockets the caller opened (UDP and TCP, normally on
// one port), wherever they listen: the escape from the loopback rule for a
// process that is itself the outside world of a test network (the chaos
// suite's outside container). It serves until Close.
func NewDNSOn(pc net.PacketConn, ln net.Listener) *DNS {
	d := &DNS{
		records:   make(map[rrKey][]dns.RR),
		names:     make(map[string]int),
		failures:  make(map[string]Failure),
		authentic: make(map[string]bool),
	}
	d.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(d.serve)
	d.udp = &dns.Server{PacketConn: pc, Handler: h}
	d.tcp = &dns.Server{Listener: ln, Handler: h}
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
	}
	return d
}

// listenBoth opens UDP and TCP on one port. With port 0 it retries when
// the UDP port it got is taken for TCP.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("simnet dns: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return nil, nil, fmt.Errorf("simnet dns: %w", err)
		}
	}
	return nil, nil, errors.New("simnet dns: no port free for both UDP and TCP")
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("simnet: address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("simnet: address %q is not a loopback address: simnet never listens beyond this machine", addr)
	}
	return nil
}

// Addr is the host:port to put in dns_servers.
func (d *DNS) Addr() string { return d.addr }

// Close stops the server.
func (d *DNS) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(d.udp.ShutdownContext(ctx), d.tcp.ShutdownContext(ctx))
}

// Set replaces name's records of type typ ("MX", "A", "AAAA", "TXT",
// "TLSA", "PTR", "CNAME", …) with records, each the record data as in a
// zone file: "10 mx.example.org.", "127.0.0.1", "3 1 1 ABCD…". A TXT
// record not starting with a quote is taken as its text and quoted (split
// into 255-byte strings). With no records the name exists but has no
// records of that type (NODATA).
func (d *DNS) Set(name, typ string, records ...string) error {
	rtype, ok := dns.StringToType[strings.ToUpper(typ)]
	if !ok {
		return fmt.Errorf("simnet dns: unknown record type %q", typ)
	}
	owner, err := canonical(name)
	if err != nil {
		return err
	}
	rrs := make([]dns.RR, 0, len(records))
	for _, rec := range records {
		if rtype == dns.TypeTXT && !strings.HasPrefix(strings.TrimSpace(rec), `"`) {
			rec = quoteTXT(rec)
		}
		rr, err := dns.NewRR(owner + " 300 IN " + dns.TypeToString[rtype] + " " + rec)
		if err != nil {
			return fmt.Errorf("simnet dns: %s %s %q: %w", name, typ, rec, err)
		}
		if rr == nil || rr.Header().Rrtype != rtype {
			return fmt.Errorf("simnet dns: %s %s %q: not a %s record", name, typ, rec, typ)
		}
		rrs = append(rrs, rr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k := rrKey{owner, rtype}
	if _, had := d.records[k]; !had {
		d.names[owner]++
	}
	d.records[k] = rrs
	return nil
}

// Remove forgets everything about name: its records, failure and
// authentic flag. Afterwards the wildcard (if any) answers for it.
func (d *DNS) Remove(name string) {
	owner, err := canonical(name)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.records {
		if k.name == owner {
			delete(d.records, k)
		}
	}
	delete(d.names, owner)
	delete(d.failures, owner)
	delete(d.authentic, owner)
}

// SetWildcard makes every name exist, with MX "10 mxHost" and A 127.0.0.1
// (WildcardA) unless Set gave that name records of that type (Set with no
// records makes it NODATA), and no records of other types it was not
// given: every domain then delivers to the sink. An empty mxHost turns the
// wildcard off (names not in the table are NXDOMAIN, the default).
func (d *DNS) SetWildcard(mxHost string) error {
	target := ""
	if mxHost != "" {
		var err error
		if target, err = canonical(mxHost); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wildcard = target
	return nil
}

// SetFailure makes every query for name fail with f (NoFailure: answer
// normally again).
func (d *DNS) SetFailure(name string, f Failure) error {
	owner, err := canonical(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f == NoFailure {
		delete(d.failures, owner)
	} else {
		d.failures[owner] = f
	}
	return nil
}

// SetAuthentic makes answers about name carry the AD bit ("validated with
// DNSSEC", for DANE tests) when the query asks for it (AD or DO set, RFC
// 6840 §5.7), as a validating resolver does.
func (d *DNS) SetAuthentic(name string, on bool) error {
	owner, err := canonical(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if on {
		d.authentic[owner] = true
	} else {
		delete(d.authentic, owner)
	}
	return nil
}

// Queries returns the questions asked so far (the last 1000), oldest first.
func (d *DNS) Queries() []Query {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Query(nil), d.queries...)
}

func canonical(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", errors.New("simnet dns: empty name")
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return "", fmt.Errorf("simnet dns: %q is not a domain name", name)
	}
	return dns.CanonicalName(name), nil
}

func quoteTXT(text string) string {
	var parts []string
	for len(text) > 255 {
		parts = append(parts, text[:255])
		text = text[255:]
	}
	parts = append(parts, text)
	for i, p := range parts {
		p = strings.ReplaceAll(p, `\`, `\\`)
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `\"`) + `"`
	}
	return strings.Join(parts, " ")
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	owner := dns.CanonicalName(q.Name)
	wantAD := req.AuthenticatedData
	size := uint16(dns.MinMsgSize)
	if opt := req.IsEdns0(); opt != nil {
		wantAD = wantAD || opt.Do()
		size = max(opt.UDPSize(), dns.MinMsgSize)
		m.SetEdns0(size, opt.Do())
	}

	d.mu.Lock()
	d.queries = append(d.queries, Query{Name: strings.TrimSuffix(owner, "."), Type: dns.TypeToString[q.Qtype]})
	if len(d.queries) > maxQueryLog {
		d.queries = append(d.queries[:0:0], d.queries[len(d.queries)-maxQueryLog:]...)
	}
	failure := d.failures[owner]
	answer, rcode := d.resolve(owner, q.Qtype)
	m.AuthenticatedData = wantAD && d.authentic[owner]
	d.mu.Unlock()

	switch failure {
	case Drop:
		return
	case NXDomain:
		rcode, answer = dns.RcodeNameError, nil
	case ServFail:
		rcode, answer = dns.RcodeServerFailure, nil
	case Refused:
		rcode, answer = dns.RcodeRefused, nil
	}
	if rcode != dns.RcodeSuccess {
		m.AuthenticatedData = false
	}
	m.Rcode = rcode
	m.Answer = answer
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(int(size))
	}
	_ = w.WriteMsg(m)
}

// resolve answers (owner, qtype) from the table, following CNAMEs. The
// caller holds d.mu.
func (d *DNS) resolve(owner string, qtype uint16) ([]dns.RR, int) {
	var answer []dns.RR
	name := owner
	for range 9 {
		if rrs, ok := d.records[rrKey{name, qtype}]; ok {
			return append(answer, copyRRs(rrs)...), dns.RcodeSuccess
		}
		if cn, ok := d.records[rrKey{name, dns.TypeCNAME}]; ok && len(cn) > 0 && qtype != dns.TypeCNAME {
			answer = append(answer, dns.Copy(cn[0]))
			name = cn[0].(*dns.CNAME).Target
			continue
		}
		if d.wildcard == "" {
			if d.names[name] > 0 || len(answer) > 0 {
				return answer, dns.RcodeSuccess // NODATA
			}
			return nil, dns.RcodeNameError
		}
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Rrtype: qtype, Ttl: 300}
		switch qtype {
		case dns.TypeMX:
			answer = append(answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: d.wildcard})
		case dns.TypeA:
			answer = append(answer, &dns.A{Hdr: hdr, A: net.ParseIP(WildcardA).To4()})
		}
		return answer, dns.RcodeSuccess
	}
	return answer, dns.RcodeServerFailure // a CNAME loop
}

func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

// portOf returns the port of a host:port.
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
