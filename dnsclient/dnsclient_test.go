package dnsclient_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/simnet"
)

// world is a simnet DNS on loopback and a resolver pointed at it.
func world(t *testing.T) (*simnet.DNS, *dnsclient.Resolver) {
	t.Helper()
	d, err := simnet.NewDNS("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	r, err := dnsclient.New([]string{d.Addr()}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d, r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesNoServers(t *testing.T) {
	if _, err := dnsclient.New(nil, 0); err == nil || !strings.Contains(err.Error(), "dns_servers") {
		t.Fatalf("New(nil): %v, want an error naming dns_servers", err)
	}
	for _, bad := range []string{"dns.example.org", "127.0.0.1:x", "127.0.0.1:70000", ""} {
		if _, err := dnsclient.New([]string{bad}, 0); err == nil {
			t.Errorf("New(%q) accepted a server that is not an address", bad)
		}
	}
	r, err := dnsclient.New([]string{"127.0.0.1", "::1", "[::1]:5353", "127.0.0.2:53"}, 0)
	must(t, err)
	if got, want := r.Servers(), []string{"127.0.0.1:53", "[::1]:53", "[::1]:5353", "127.0.0.2:53"}; !slices.Equal(got, want) {
		t.Fatalf("servers %v, want %v", got, want)
	}
}

func TestMXSortedAndNullMX(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	must(t, d.Set("example.org", "MX", "20 mx2.example.org.", "10 mx1.example.org.", "30 mx3.example.org."))
	mx, err := r.LookupMX(ctx, "Example.ORG")
	must(t, err)
	want := []dnsclient.MX{{"mx1.example.org", 10}, {"mx2.example.org", 20}, {"mx3.example.org", 30}}
	if !slices.Equal(mx, want) {
		t.Fatalf("MX %v, want %v", mx, want)
	}
	if _, authentic, err := r.LookupMXAuthentic(ctx, "example.org"); err != nil || authentic {
		t.Fatalf("MX authentic without AD: %v %v", authentic, err)
	}
	must(t, d.SetAuthentic("example.org", true))
	if mx, authentic, err := r.LookupMXAuthentic(ctx, "example.org"); err != nil || !authentic || len(mx) != 3 {
		t.Fatalf("MX with AD: %v %v %v", mx, authentic, err)
	}
	must(t, d.Set("nomail.example.org", "MX", "0 ."))
	mx, err = r.LookupMX(ctx, "nomail.example.org.")
	must(t, err)
	if len(mx) != 1 || !mx[0].Null() || mx[0].Host != "." {
		t.Fatalf("null MX: %v", mx)
	}
}

func TestNotFoundVersusTemporary(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	must(t, d.Set("a-only.example.org", "A", "192.0.2.1"))

	// NXDOMAIN: the name does not exist.
	_, err := r.LookupMX(ctx, "missing.example.org")
	var de *dnsclient.Error
	if !errors.Is(err, dnsclient.ErrNotFound) || errors.Is(err, dnsclient.ErrTemporary) || !errors.As(err, &de) || !de.NXDomain {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	// NODATA: the name exists, without MX.
	_, err = r.LookupMX(ctx, "a-only.example.org")
	if !errors.Is(err, dnsclient.ErrNotFound) || !errors.As(err, &de) || de.NXDomain {
		t.Fatalf("NODATA: %v", err)
	}
	// SERVFAIL and REFUSED are temporary.
	must(t, d.SetFailure("broken.example.org", simnet.ServFail))
	must(t, d.SetFailure("refused.example.org", simnet.Refused))
	for _, name := range []string{"broken.example.org", "refused.example.org"} {
		if _, err := r.LookupTXT(ctx, name); !errors.Is(err, dnsclient.ErrTemporary) || errors.Is(err, dnsclient.ErrNotFound) {
			t.Fatalf("%s: %v, want temporary", name, err)
		}
	}
	// A forced NXDOMAIN on a name that has records.
	must(t, d.SetFailure("a-only.example.org", simnet.NXDomain))
	if _, err := r.LookupIP(ctx, "a-only.example.org"); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("forced NXDOMAIN: %v", err)
	}
	// Not a name at all.
	if _, err := r.LookupMX(ctx, "bad..name"); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestIPBothFamiliesAndCNAME(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	must(t, d.Set("mx.example.org", "A", "192.0.2.1", "192.0.2.2"))
	must(t, d.Set("mx.example.org", "AAAA", "2001:db8::1"))
	must(t, d.Set("alias.example.org", "CNAME", "mx.example.org."))
	must(t, d.Set("v6only.example.org", "AAAA", "2001:db8::2"))
	for _, name := range []string{"mx.example.org", "alias.example.org"} {
		ips, err := r.LookupIP(ctx, name)
		must(t, err)
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if want := []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}; !slices.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", name, got, want)
		}
	}
	ips, err := r.LookupIP(ctx, "v6only.example.org")
	if err != nil || len(ips) != 1 || ips[0].String() != "2001:db8::2" {
		t.Fatalf("v6 only: %v %v", ips, err)
	}
	// One family failing temporarily does not hide the other's answer; both
	// failing is temporary, not "no address".
	must(t, d.SetFailure("gone.example.org", simnet.ServFail))
	if _, err := r.LookupIP(ctx, "gone.example.org"); !errors.Is(err, dnsclient.ErrTemporary) {
		t.Fatalf("SERVFAIL for both: %v", err)
	}
}

func TestTXTJoinedAndTruncationFallsBackToTCP(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400) // more than one 255-byte string
	must(t, d.Set("sel._domainkey.example.org", "TXT", long))
	must(t, d.Set("example.org", "TXT", `"v=spf1 " "-all"`))
	txt, err := r.LookupTXT(ctx, "sel._domainkey.example.org")
	if err != nil || len(txt) != 1 || txt[0] != long {
		t.Fatalf("long TXT: %v %q", err, txt)
	}
	txt, err = r.LookupTXT(ctx, "example.org")
	if err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Fatalf("split TXT: %v %q", err, txt)
	}
	// An answer bigger than a UDP reply may be (1232 bytes asked) comes
	// truncated; the resolver asks again over TCP and gets all of it.
	var many []string
	for i := range 20 {
		many = append(many, strings.Repeat(string(rune('a'+i)), 200))
	}
	must(t, d.Set("big.example.org", "TXT", many...))
	txt, err = r.LookupTXT(ctx, "big.example.org")
	if err != nil || len(txt) != 20 {
		t.Fatalf("big TXT: %v, %d records", err, len(txt))
	}
}

func TestTLSAAuthenticIsTheADBit(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	name := "_25._tcp.mx.example.org"
	must(t, d.Set(name, "TLSA", "3 1 1 0123456789abcdef"))
	recs, authentic, err := r.LookupTLSA(ctx, name)
	must(t, err)
	if authentic {
		t.Fatal("authentic without the AD bit")
	}
	want := dnsclient.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}}
	if len(recs) != 1 || recs[0].Usage != want.Usage || recs[0].Selector != want.Selector || recs[0].MatchingType != want.MatchingType || string(recs[0].Data) != string(want.Data) {
		t.Fatalf("TLSA %+v", recs)
	}
	// The simnet DNS sets AD only when the query asks for it, as validating
	// resolvers do: this also proves the resolver asks.
	must(t, d.SetAuthentic(name, true))
	if _, authentic, err = r.LookupTLSA(ctx, name); err != nil || !authentic {
		t.Fatalf("authentic TLSA: %v %v", authentic, err)
	}
	if _, _, err := r.LookupTLSA(ctx, "_25._tcp.other.example.org"); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("no TLSA: %v", err)
	}
}

func TestPTR(t *testing.T) {
	d, r := world(t)
	must(t, d.Set("1.2.0.192.in-addr.arpa", "PTR", "mx.example.org."))
	must(t, d.Set("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", "v6.example.org."))
	names, err := r.LookupAddr(t.Context(), net.ParseIP("192.0.2.1"))
	if err != nil || !slices.Equal(names, []string{"mx.example.org"}) {
		t.Fatalf("PTR v4: %v %v", names, err)
	}
	names, err = r.LookupAddr(t.Context(), net.ParseIP("2001:db8::1"))
	if err != nil || !slices.Equal(names, []string{"v6.example.org"}) {
		t.Fatalf("PTR v6: %v %v", names, err)
	}
	if _, err := r.LookupAddr(t.Context(), net.ParseIP("192.0.2.9")); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("no PTR: %v", err)
	}
}

func TestWildcardSendsEveryDomainToTheSink(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	must(t, d.SetWildcard(simnet.DefaultSinkHost))
	must(t, d.Set("own.example.org", "TXT", "v=spf1 -all"))
	for _, dom := range []string{"anywhere.test", "own.example.org"} {
		mx, err := r.LookupMX(ctx, dom)
		if err != nil || len(mx) != 1 || mx[0].Host != simnet.DefaultSinkHost {
			t.Fatalf("%s MX: %v %v", dom, mx, err)
		}
	}
	ips, err := r.LookupIP(ctx, simnet.DefaultSinkHost)
	if err != nil || len(ips) != 1 || !ips[0].Equal(net.ParseIP(simnet.WildcardA)) {
		t.Fatalf("sink A: %v %v", ips, err)
	}
	if _, err := r.LookupTXT(ctx, "anywhere.test"); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("wildcard TXT: %v", err)
	}
	// Set with no records makes the wildcard's answer NODATA for that name.
	must(t, d.Set("quiet.test", "MX"))
	if _, err := r.LookupMX(ctx, "quiet.test"); !errors.Is(err, dnsclient.ErrNotFound) {
		t.Fatalf("NODATA under the wildcard: %v", err)
	}
	if got := d.Queries(); len(got) == 0 || got[0] != (simnet.Query{Name: "anywhere.test", Type: "MX"}) {
		t.Fatalf("query log: %v", got)
	}
}

// silent is a UDP and TCP server on loopback that reads and never answers.
func silent(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestTimeoutIsTemporaryAndNextServerAnswers(t *testing.T) {
	d, _ := world(t)
	must(t, d.Set("example.org", "MX", "10 mx.example.org."))
	dead := silent(t)
	r, err := dnsclient.New([]string{dead}, 200*time.Millisecond)
	must(t, err)
	_, err = r.LookupMX(t.Context(), "example.org")
	var de *dnsclient.Error
	if !errors.Is(err, dnsclient.ErrTemporary) || !errors.As(err, &de) || de.Server != dead {
		t.Fatalf("silent server: %v, want a temporary error naming %s", err, dead)
	}
	// A silent first server, then a working one: the answer comes from the second.
	r, err = dnsclient.New([]string{dead, d.Addr()}, 200*time.Millisecond)
	must(t, err)
	if mx, err := r.LookupMX(t.Context(), "example.org"); err != nil || len(mx) != 1 {
		t.Fatalf("failover: %v %v", mx, err)
	}
	// A SERVFAIL from the first server moves on too.
	d2, _ := world(t)
	must(t, d2.SetFailure("example.org", simnet.ServFail))
	r, err = dnsclient.New([]string{d2.Addr(), d.Addr()}, time.Second)
	must(t, err)
	if mx, err := r.LookupMX(t.Context(), "example.org"); err != nil || len(mx) != 1 {
		t.Fatalf("SERVFAIL then an answer: %v %v", mx, err)
	}
	// simnet's Drop: the DNS itself stays silent for one name.
	must(t, d.SetFailure("slow.example.org", simnet.Drop))
	r, err = dnsclient.New([]string{d.Addr()}, 200*time.Millisecond)
	must(t, err)
	if _, err := r.LookupMX(t.Context(), "slow.example.org"); !errors.Is(err, dnsclient.ErrTemporary) {
		t.Fatalf("dropped query: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	r, err := dnsclient.New([]string{silent(t)}, 10*time.Second)
	must(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err = r.LookupMX(ctx, "example.org")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, dnsclient.ErrTemporary) {
		t.Fatalf("canceled: %v", err)
	}
}
