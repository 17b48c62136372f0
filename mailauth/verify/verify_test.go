package verify

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

// env is a checker wired to a loopback DNS the test edits.
type env struct {
	t   *testing.T
	dns *simnet.DNS
	r   *dnsclient.Resolver
	c   *Checker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d, err := simnet.NewDNS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	r, err := dnsclient.New([]string{d.Addr()}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dns: d, r: r, c: New(Config{Resolver: r, Timeout: time.Minute})}
}

func (e *env) set(name, typ string, records ...string) {
	e.t.Helper()
	if err := e.dns.Set(name, typ, records...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) fail(name string, f simnet.Failure) {
	e.t.Helper()
	if err := e.dns.SetFailure(name, f); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) check(in Input) Result {
	e.t.Helper()
	if in.Message == nil {
		in.Message = strings.NewReader(message("someone@" + domainOf(in.MailFrom)))
	}
	res, err := e.c.Check(context.Background(), in)
	if err != nil {
		e.t.Fatalf("Check: %v", err)
	}
	return res
}

// queried reports whether the DNS was asked (name, typ).
func (e *env) queried(name, typ string) bool {
	return slices.Contains(e.dns.Queries(), simnet.Query{Name: name, Type: typ})
}

func domainOf(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		return addr[at+1:]
	}
	return "nowhere.test"
}

// message is a small CRLF message from the given From value.
func message(from string, extraHeader ...string) string {
	var b strings.Builder
	for _, h := range extraHeader {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("From: " + from + "\r\n")
	b.WriteString("To: rcpt@mx.test\r\n")
	b.WriteString("Subject: hello\r\n")
	b.WriteString("Date: Mon, 07 Dec 2026 23:00:00 +0000\r\n")
	b.WriteString("Message-ID: <1@test>\r\n")
	b.WriteString("\r\n")
	b.WriteString("Hello there.\r\nSecond line.\r\n")
	return b.String()
}

var clientIP = net.ParseIP("192.0.2.1")

func TestSPFResults(t *testing.T) {
	e := newEnv(t)
	e.set("pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
	e.set("fail.test", "TXT", "v=spf1 ip4:198.51.100.1 -all")
	e.set("soft.test", "TXT", "v=spf1 ~all")
	e.set("neutral.test", "TXT", "v=spf1 ?all")
	e.set("nospf.test", "TXT", "some other text")
	e.set("perm.test", "TXT", "v=spf1 bogus:x -all")
	e.set("twice.test", "TXT", "v=spf1 -all", "v=spf1 +all")
	e.set("temp.test", "TXT", "v=spf1 +all")
	e.fail("temp.test", simnet.ServFail)
	cases := []struct {
		domain, want string
	}{
		{"pass.test", Pass},
		{"fail.test", Fail},
		{"soft.test", SoftFail},
		{"neutral.test", Neutral},
		{"nospf.test", None},
		{"nxdomain.test", None},
		{"perm.test", PermError},
		{"twice.test", PermError},
		{"temp.test", TempError},
	}
	for _, tc := range cases {
		res := e.check(Input{IP: clientIP, Helo: "client.test", MailFrom: "user@" + tc.domain})
		if res.SPF.Result != tc.want || res.SPF.Domain != tc.domain || res.SPF.Identity != "mailfrom" {
			t.Errorf("%s: SPF = %+v, want %s", tc.domain, res.SPF, tc.want)
		}
		if !e.queried(tc.domain, "TXT") {
			t.Errorf("%s: the SPF record was not asked of the test DNS", tc.domain)
		}
	}
}

// TestSPFNullSenderChecksHelo: with MAIL FROM:<> the HELO name is the
// identity (RFC 7208 §2.3/§2.4).
func TestSPFNullSenderChecksHelo(t *testing.T) {
	e := newEnv(t)
	e.set("out.helo.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
	res := e.check(Input{IP: clientIP, Helo: "out.helo.test", MailFrom: "", Message: strings.NewReader(message("a@helo.test"))})
	if res.SPF.Result != Pass || res.SPF.Identity != "helo" || res.SPF.Domain != "out.helo.test" {
		t.Fatalf("SPF = %+v, want pass for helo out.helo.test", res.SPF)
	}
	if h := res.Header("mx.test"); !strings.Contains(h, "spf=pass smtp.helo=out.helo.test;") {
		t.Errorf("header %q lacks spf=pass smtp.helo=out.helo.test", h)
	}
	res = e.check(Input{IP: net.ParseIP("192.0.2.7"), Helo: "out.helo.test", MailFrom: ""})
	if res.SPF.Result != Fail {
		t.Errorf("other address: SPF = %+v, want fail", res.SPF)
	}
	res = e.check(Input{IP: clientIP, Helo: "[192.0.2.1]", MailFrom: ""})
	if res.SPF.Result != None {
		t.Errorf("address-literal HELO: SPF = %+v, want none", res.SPF)
	}
}

// TestSPFAsksOnlyOurResolver walks every kind of lookup an SPF record can
// cause and checks each reached the test DNS: had the library fallen back
// to the system resolver, these questions would be missing here.
func TestSPFAsksOnlyOurResolver(t *testing.T) {
	e := newEnv(t)
	e.set("spf.test", "TXT", "v=spf1 a:a.spf.test mx:mx.spf.test ptr:spf.test include:inc.spf.test exists:e.spf.test -all")
	e.set("a.spf.test", "A", "198.51.100.10")
	e.set("mx.spf.test", "MX", "10 mxhost.spf.test.")
	e.set("mxhost.spf.test", "A", "198.51.100.11")
	e.set("inc.spf.test", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
	e.set("99.2.0.192.in-addr.arpa", "PTR", "host.elsewhere.test.")
	e.set("host.elsewhere.test", "A", "192.0.2.99")
	res := e.check(Input{IP: net.ParseIP("192.0.2.99"), Helo: "c.test", MailFrom: "x@spf.test"})
	if res.SPF.Result != Fail {
		t.Fatalf("SPF = %+v, want fail (nothing matches)", res.SPF)
	}
	for _, q := range []simnet.Query{
		{Name: "spf.test", Type: "TXT"},
		{Name: "a.spf.test", Type: "A"},
		{Name: "mx.spf.test", Type: "MX"},
		{Name: "mxhost.spf.test", Type: "A"},
		{Name: "99.2.0.192.in-addr.arpa", Type: "PTR"},
		{Name: "inc.spf.test", Type: "TXT"},
		{Name: "e.spf.test", Type: "A"},
	} {
		if !e.queried(q.Name, q.Type) {
			t.Errorf("SPF lookup %s %s did not reach the test DNS (asked: %v)", q.Type, q.Name, e.dns.Queries())
		}
	}
	// The same record now matching through each mechanism in turn.
	for _, ip := range []string{"198.51.100.10", "198.51.100.11", "198.51.100.77"} {
		if r := e.check(Input{IP: net.ParseIP(ip), Helo: "c.test", MailFrom: "x@spf.test"}); r.SPF.Result != Pass {
			t.Errorf("%s: SPF = %+v, want pass", ip, r.SPF)
		}
	}
}

func TestIPRev(t *testing.T) {
	e := newEnv(t)
	e.set("1.2.0.192.in-addr.arpa", "PTR", "other.test.", "host.iprev.test.")
	e.set("host.iprev.test", "A", "192.0.2.1")
	e.set("other.test", "A", "203.0.113.5")
	e.set("2.2.0.192.in-addr.arpa", "PTR", "liar.test.")
	e.set("liar.test", "A", "203.0.113.6")
	e.set("4.2.0.192.in-addr.arpa", "PTR", "broken.test.")
	e.fail("broken.test", simnet.ServFail)
	e.fail("5.2.0.192.in-addr.arpa", simnet.ServFail)
	v6 := net.ParseIP("2001:db8::25")
	rev6 := "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
	e.set(rev6, "PTR", "six.iprev.test.")
	e.set("six.iprev.test", "AAAA", "2001:db8::25")
	cases := []struct {
		ip, want, name string
	}{
		{"192.0.2.1", Pass, "host.iprev.test"},
		{"192.0.2.2", Fail, ""},      // the PTR name points elsewhere
		{"192.0.2.3", Fail, ""},      // no PTR at all
		{"192.0.2.4", TempError, ""}, // the forward lookup fails
		{"192.0.2.5", TempError, ""}, // the PTR lookup fails
		{v6.String(), Pass, "six.iprev.test"},
	}
	for _, tc := range cases {
		res := e.check(Input{IP: net.ParseIP(tc.ip), Helo: "c.test", MailFrom: "a@b.test"})
		if res.IPRev.Result != tc.want || res.IPRev.Name != tc.name {
			t.Errorf("%s: iprev = %+v, want %s %q", tc.ip, res.IPRev, tc.want, tc.name)
		}
	}
	res := e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "a@b.test"})
	if h := res.Header("mx.test"); !strings.Contains(h, "iprev=pass policy.iprev=192.0.2.1\r\n") {
		t.Errorf("header %q lacks iprev=pass policy.iprev=192.0.2.1", h)
	}
}

// TestTimeoutIsTempError: a DNS that never answers ends in temperror within
// the check's timeout, not in an error or a hang.
func TestTimeoutIsTempError(t *testing.T) {
	e := newEnv(t)
	e.fail("slow.test", simnet.Drop)
	e.fail("1.2.0.192.in-addr.arpa", simnet.Drop)
	e.fail("_dmarc.slow.test", simnet.Drop)
	c := New(Config{Resolver: e.r, Timeout: 300 * time.Millisecond})
	start := time.Now()
	res, err := c.Check(context.Background(), Input{IP: clientIP, Helo: "c.test", MailFrom: "a@slow.test",
		Message: strings.NewReader(message("a@slow.test"))})
	if err != nil {
		t.Fatal(err)
	}
	if res.SPF.Result != TempError || res.IPRev.Result != TempError || res.DMARC.Result != TempError {
		t.Errorf("results = %+v, want temperror for SPF, iprev and DMARC", res)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Check took %v with a 300ms timeout", d)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		n := copy(p, "From: a@b.test\r\nSubj")
		f.n = 0
		return n, nil
	}
	return 0, errors.New("disk on fire")
}

func TestUnreadableMessageIsAnError(t *testing.T) {
	e := newEnv(t)
	_, err := e.c.Check(context.Background(), Input{IP: clientIP, Helo: "c.test", MailFrom: "a@b.test", Message: &failingReader{n: 1}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Check = %v, want the reader's error", err)
	}
	_, err = e.c.Check(context.Background(), Input{IP: clientIP, Helo: "c.test", MailFrom: "a@b.test"})
	if err == nil {
		t.Fatal("Check without a message succeeded")
	}
}

func TestNewNeedsAResolver(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New without a resolver did not panic")
		}
	}()
	New(Config{})
}
