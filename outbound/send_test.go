package outbound

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

var bg = context.Background()

func TestMXPreferenceOrderAndFallback(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	// Listed out of order; the preferred one refuses connections.
	e.mx("order.test", "mx2.order.test", 20, "127.0.1.2", srv)
	e.mx("order.test", "mx1.order.test", 10, "127.0.1.1", nil)
	c := e.client(nil)
	r := one(t, c.Send(bg, "order.test", message("a@sender.test", "b@order.test"), nil))
	wantDelivered(t, r)
	if r.Host != "mx2.order.test" {
		t.Fatalf("host %q, want mx2.order.test", r.Host)
	}
	want := []string{"127.0.1.1:2525", "127.0.1.2:2525"}
	if got := e.net.dialed(); !slices.Equal(got, want) {
		t.Fatalf("dials %v, want %v", got, want)
	}
	_, _, msgs := srv.stats()
	if len(msgs) != 1 || msgs[0].from != "a@sender.test" || !slices.Equal(msgs[0].rcpts, []string{"b@order.test"}) || !strings.HasSuffix(msgs[0].data, "Hello there.\r\n") {
		t.Fatalf("server got %+v", msgs)
	}
}

func TestAllMXUnreachableIsTemporary(t *testing.T) {
	e := newEnv(t)
	e.mx("down.test", "mx1.down.test", 10, "127.0.1.1", nil)
	e.mx("down.test", "mx2.down.test", 20, "127.0.1.2", nil)
	c := e.client(nil)
	r := one(t, c.Send(bg, "down.test", message("a@sender.test", "b@down.test"), nil))
	wantTemporary(t, r, "cannot connect to mx1.down.test [127.0.1.1]")
	wantTemporary(t, r, "; cannot connect to mx2.down.test [127.0.1.2]")
	if len(e.net.dialed()) != 2 {
		t.Fatalf("dials %v, want both MX", e.net.dialed())
	}
}

func TestEqualPreferenceIsShuffled(t *testing.T) {
	firsts := map[string]int{}
	for range 200 {
		hosts := orderMX([]MX{{"c", 10}, {"z", 5}, {"a", 10}, {"b", 10}})
		if hosts[0] != "z" || len(hosts) != 4 {
			t.Fatalf("order %v: the lowest preference must come first", hosts)
		}
		firsts[hosts[1]]++
	}
	for _, h := range []string{"a", "b", "c"} {
		if firsts[h] == 0 {
			t.Fatalf("%s never came first among equal preferences in 200 tries: %v", h, firsts)
		}
	}
}

func TestNoMXFallsBackToAddress(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.host("plain.test", "127.0.1.3", srv)
	c := e.client(nil)
	r := one(t, c.Send(bg, "plain.test", message("a@sender.test", "b@plain.test"), nil))
	wantDelivered(t, r)
	if r.Host != "plain.test" {
		t.Fatalf("host %q", r.Host)
	}
}

func TestIPv4AndIPv6InTurn(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.dns.setMX("dual.test", MX{Host: "mx.dual.test", Pref: 10})
	e.host("mx.dual.test", "fd00::1", nil)
	e.host("mx.dual.test", "fd00::2", nil)
	e.host("mx.dual.test", "127.0.1.4", srv)
	c := e.client(nil)
	wantDelivered(t, one(t, c.Send(bg, "dual.test", message("a@sender.test", "b@dual.test"), nil)))
	want := []string{"[fd00::1]:2525", "127.0.1.4:2525"}
	if got := e.net.dialed(); !slices.Equal(got, want) {
		t.Fatalf("dials %v, want %v (IPv6 then IPv4)", got, want)
	}
}

func TestNullMXFailsEveryRecipient(t *testing.T) {
	e := newEnv(t)
	e.dns.setMX("nullmx.test", MX{Host: ".", Pref: 0})
	c := e.client(nil)
	rs := c.Send(bg, "nullmx.test", message("a@sender.test", "b@nullmx.test", "c@nullmx.test"), nil)
	for _, r := range rs {
		wantPermanent(t, r, 556, "5.1.10")
	}
	if len(e.net.dialed()) != 0 {
		t.Fatalf("dialled %v", e.net.dialed())
	}
}

func TestNXDomainIsPermanent(t *testing.T) {
	e := newEnv(t)
	c := e.client(nil)
	wantPermanent(t, one(t, c.Send(bg, "nowhere.test", message("a@sender.test", "b@nowhere.test"), nil)), 550, "5.1.2")
}

func TestDNSFailureIsTemporary(t *testing.T) {
	e := newEnv(t)
	e.dns.mxErr["flaky.test"] = fmt.Errorf("SERVFAIL: %w", ErrTemporary)
	c := e.client(nil)
	r := one(t, c.Send(bg, "flaky.test", message("a@sender.test", "b@flaky.test"), nil))
	wantTemporary(t, r, "MX lookup")
	if r.Enhanced != "4.4.3" {
		t.Fatalf("%+v", r)
	}
}

func TestPerRecipientReplies(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	srv.rcptReply["b@rc.test"] = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"}
	srv.rcptReply["c@rc.test"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	e.mx("rc.test", "mx.rc.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	rs := c.Send(bg, "rc.test", message("a@sender.test", "a@rc.test", "b@rc.test", "c@rc.test"), nil)
	if len(rs) != 3 || rs[0].Rcpt != "a@rc.test" || rs[1].Rcpt != "b@rc.test" || rs[2].Rcpt != "c@rc.test" {
		t.Fatalf("results %+v", rs)
	}
	wantDelivered(t, rs[0])
	wantTemporary(t, rs[1], "mailbox busy")
	if rs[1].Code != 450 || rs[1].Enhanced != "4.2.1" || rs[1].Host != "mx.rc.test" {
		t.Fatalf("%+v", rs[1])
	}
	wantPermanent(t, rs[2], 550, "5.1.1")
	if rs[2].Text != "no such user" {
		t.Fatalf("%+v", rs[2])
	}
	_, _, msgs := srv.stats()
	if len(msgs) != 1 || !slices.Equal(msgs[0].rcpts, []string{"a@rc.test"}) {
		t.Fatalf("server got %+v", msgs)
	}
}

func TestDataReplies(t *testing.T) {
	for _, tc := range []struct {
		reply     *smtp.SMTPError
		permanent bool
	}{
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}, true},
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, false},
	} {
		e := newEnv(t)
		srv := newMX(t)
		srv.dataReply = tc.reply
		e.mx("data.test", "mx.data.test", 10, "127.0.1.1", srv)
		c := e.client(nil)
		rs := c.Send(bg, "data.test", message("a@sender.test", "a@data.test", "b@data.test"), nil)
		for _, r := range rs {
			if r.Delivered || r.Permanent != tc.permanent || r.Code != tc.reply.Code || r.Text != tc.reply.Message {
				t.Fatalf("reply %v: got %+v", tc.reply, r)
			}
		}
	}
}

func TestSTARTTLSUsedWhenOffered(t *testing.T) {
	e := newEnv(t)
	// Self-signed for another name: opportunistic TLS does not check it.
	tlsSrv := newMX(t, withTLS(issue(t, nil, "whatever.example")))
	plainSrv := newMX(t)
	e.mx("tls.test", "mx.tls.test", 10, "127.0.1.1", tlsSrv)
	e.mx("plain.test", "mx.plain.test", 10, "127.0.1.2", plainSrv)
	c := e.client(nil)
	wantDelivered(t, one(t, c.Send(bg, "tls.test", message("a@sender.test", "b@tls.test"), nil)))
	wantDelivered(t, one(t, c.Send(bg, "plain.test", message("a@sender.test", "b@plain.test"), nil)))
	if _, _, msgs := tlsSrv.stats(); len(msgs) != 1 || !msgs[0].tls {
		t.Fatalf("TLS server got %+v, want one message over TLS", msgs)
	}
	if _, _, msgs := plainSrv.stats(); len(msgs) != 1 || msgs[0].tls {
		t.Fatalf("plain server got %+v", msgs)
	}
}

func TestTLSRequireRefusesPlainRemote(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.mx("req.test", "mx.req.test", 10, "127.0.1.1", srv)
	c := e.client(func(c *Config) { c.TLS = TLSRequire })
	wantTemporary(t, one(t, c.Send(bg, "req.test", message("a@sender.test", "b@req.test"), nil)), "STARTTLS")
	if _, mails, _ := srv.stats(); mails != 0 {
		t.Fatal("a transaction started without TLS")
	}
}

// stsServer serves MTA-STS policies over HTTPS for mta-sts.<domain>.
type stsServer struct {
	mu       sync.Mutex
	policies map[string]string
	fetches  int
}

func (e *env) stsServer(domains ...string) (*stsServer, int) {
	s := &stsServer{policies: map[string]string{}}
	var names []string
	for _, d := range domains {
		names = append(names, "mta-sts."+d)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.fetches++
		p, ok := s.policies[strings.TrimPrefix(r.Host, "mta-sts.")]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, p)
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{issue(e.t, e.ca, names...)}}
	hs.StartTLS()
	e.t.Cleanup(hs.Close)
	const port = 8443
	for i, d := range domains {
		ip := fmt.Sprintf("127.0.2.%d", i+1)
		e.dns.setIP("mta-sts."+d, ip)
		e.net.set(net.JoinHostPort(ip, fmt.Sprint(port)), hs.Listener.Addr().String())
	}
	return s, port
}

func (s *stsServer) set(domain, mode, mx string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies[domain] = "version: STSv1\r\nmode: " + mode + "\r\nmx: " + mx + "\r\nmax_age: 86400\r\n"
}

func TestMTASTSEnforce(t *testing.T) {
	e := newEnv(t)
	sts, port := e.stsServer("notls.test", "selfsigned.test", "good.test", "wrongmx.test", "testing.test")
	for _, d := range []string{"notls.test", "selfsigned.test", "good.test", "wrongmx.test"} {
		e.dns.setTXT("_mta-sts."+d, "v=STSv1; id=20261204;")
		sts.set(d, "enforce", "*."+d)
	}
	e.dns.setTXT("_mta-sts.testing.test", "v=STSv1; id=1")
	sts.set("testing.test", "testing", "mx.testing.test")

	noTLS := newMX(t)
	selfSigned := newMX(t, withTLS(issue(t, nil, "mx.selfsigned.test")))
	good := newMX(t, withTLS(issue(t, e.ca, "mx.good.test")))
	wrong := newMX(t, withTLS(issue(t, e.ca, "mx.elsewhere.test")))
	testingSrv := newMX(t)
	e.mx("notls.test", "mx.notls.test", 10, "127.0.1.1", noTLS)
	e.mx("selfsigned.test", "mx.selfsigned.test", 10, "127.0.1.2", selfSigned)
	e.mx("good.test", "mx.good.test", 10, "127.0.1.3", good)
	e.mx("wrongmx.test", "mx.elsewhere.test", 10, "127.0.1.4", wrong)
	e.mx("testing.test", "mx.testing.test", 10, "127.0.1.5", testingSrv)
	c := e.client(func(c *Config) { c.MTASTSPort = port })

	for _, tc := range []struct {
		domain string
		srv    *mxServer
		text   string
	}{
		{"notls.test", noTLS, "does not offer STARTTLS, which the MTA-STS policy of notls.test (enforce) requires"},
		{"selfsigned.test", selfSigned, "MTA-STS policy of selfsigned.test (enforce)"},
		{"wrongmx.test", wrong, "MTA-STS policy of wrongmx.test (enforce) does not allow MX host mx.elsewhere.test"},
	} {
		wantTemporary(t, one(t, c.Send(bg, tc.domain, message("a@sender.test", "b@"+tc.domain), nil)), tc.text)
		if _, mails, _ := tc.srv.stats(); mails != 0 {
			t.Fatalf("%s: a transaction started against the policy", tc.domain)
		}
	}
	wantDelivered(t, one(t, c.Send(bg, "good.test", message("a@sender.test", "b@good.test"), nil)))
	if _, _, msgs := good.stats(); len(msgs) != 1 || !msgs[0].tls {
		t.Fatalf("good.test got %+v", msgs)
	}
	// Testing mode only logs: a remote without TLS still gets the message.
	wantDelivered(t, one(t, c.Send(bg, "testing.test", message("a@sender.test", "b@testing.test"), nil)))

	// The policy is cached: another send to good.test fetches nothing.
	sts.mu.Lock()
	before := sts.fetches
	sts.mu.Unlock()
	wantDelivered(t, one(t, c.Send(bg, "good.test", message("a@sender.test", "b@good.test"), nil)))
	sts.mu.Lock()
	after := sts.fetches
	sts.mu.Unlock()
	if after != before {
		t.Fatalf("policy fetched again (%d -> %d) within max_age", before, after)
	}
}

func TestMTASTSPolicyParse(t *testing.T) {
	p, err := parseSTSPolicy([]byte("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 999999999\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.maxAge != stsMaxAge {
		t.Fatalf("max_age %v not capped", p.maxAge)
	}
	for host, want := range map[string]bool{"mail.example.com": true, "MAIL.example.com.": true, "a.example.net": true,
		"example.net": false, "a.b.example.net": false, "mail.example.org": false} {
		if p.matches(host) != want {
			t.Errorf("matches(%q) = %v", host, !want)
		}
	}
	for _, bad := range []string{"mode: enforce\nmx: a\nmax_age: 1\n", "version: STSv1\nmode: enforce\nmax_age: 1\n", "version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1\n"} {
		if _, err := parseSTSPolicy([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if stsTXTID([]string{"v=STSv1; id=abc"}) != "abc" || stsTXTID([]string{"v=STSv1; id=a", "v=STSv1; id=b"}) != "" || stsTXTID([]string{"v=spf1 -all"}) != "" {
		t.Fatal("TXT parse")
	}
}

func TestDANE(t *testing.T) {
	e := newEnv(t)
	eeCert := issue(t, nil, "mx.ee.test")
	ee := newMX(t, withTLS(eeCert))
	mismatch := newMX(t, withTLS(issue(t, nil, "mx.mismatch.test")))
	ta := newMX(t, withTLS(issue(t, e.ca, "mx.ta.test")))
	noTLS := newMX(t)
	insecure := newMX(t, withTLS(issue(t, nil, "mx.insecure.test")))
	e.mx("ee.test", "mx.ee.test", 10, "127.0.1.1", ee)
	e.mx("mismatch.test", "mx.mismatch.test", 10, "127.0.1.2", mismatch)
	e.mx("ta.test", "mx.ta.test", 10, "127.0.1.3", ta)
	e.mx("notls.test", "mx.notls.test", 10, "127.0.1.4", noTLS)
	e.mx("insecure.test", "mx.insecure.test", 10, "127.0.1.5", insecure)
	wrong := make([]byte, 32)
	e.dns.setTLSA("_2525._tcp.mx.ee.test", true, TLSA{3, 1, 1, spkiSHA256(eeCert)})
	e.dns.setTLSA("_2525._tcp.mx.mismatch.test", true, TLSA{3, 1, 1, wrong})
	caHash := sha256Sum(e.ca.cert.Raw)
	e.dns.setTLSA("_2525._tcp.mx.ta.test", true, TLSA{2, 0, 1, caHash})
	e.dns.setTLSA("_2525._tcp.mx.notls.test", true, TLSA{3, 1, 1, wrong})
	e.dns.setTLSA("_2525._tcp.mx.insecure.test", false, TLSA{3, 1, 1, wrong}) // not DNSSEC: ignored
	c := e.client(nil)

	wantDelivered(t, one(t, c.Send(bg, "ee.test", message("a@sender.test", "b@ee.test"), nil)))
	wantDelivered(t, one(t, c.Send(bg, "ta.test", message("a@sender.test", "b@ta.test"), nil)))
	wantDelivered(t, one(t, c.Send(bg, "insecure.test", message("a@sender.test", "b@insecure.test"), nil)))
	wantTemporary(t, one(t, c.Send(bg, "mismatch.test", message("a@sender.test", "b@mismatch.test"), nil)), "DANE")
	wantTemporary(t, one(t, c.Send(bg, "notls.test", message("a@sender.test", "b@notls.test"), nil)), "DANE")
	for _, s := range []*mxServer{mismatch, noTLS} {
		if _, mails, _ := s.stats(); mails != 0 {
			t.Fatal("a transaction started against DANE")
		}
	}
	for _, s := range []*mxServer{ee, ta} {
		if _, _, msgs := s.stats(); len(msgs) != 1 || !msgs[0].tls {
			t.Fatalf("got %+v", msgs)
		}
	}
}

func TestSMTPUTF8(t *testing.T) {
	e := newEnv(t)
	no := newMX(t)
	yes := newMX(t, withUTF8())
	e.mx("no8.test", "mx.no8.test", 10, "127.0.1.1", no)
	e.mx("yes8.test", "mx.yes8.test", 10, "127.0.1.2", yes)
	c := e.client(nil)
	m := message("a@sender.test", "b@no8.test")
	m.UTF8 = true
	r := one(t, c.Send(bg, "no8.test", m, nil))
	wantPermanent(t, r, 553, "5.6.7")
	if !strings.Contains(r.Text, "SMTPUTF8") {
		t.Fatalf("%+v", r)
	}
	if _, mails, _ := no.stats(); mails != 0 {
		t.Fatal("sent MAIL to a server without SMTPUTF8")
	}
	m = message("a@sender.test", "b@yes8.test")
	m.UTF8 = true
	wantDelivered(t, one(t, c.Send(bg, "yes8.test", m, nil)))
	if _, _, msgs := yes.stats(); len(msgs) != 1 || !msgs[0].mail.UTF8 {
		t.Fatalf("got %+v", msgs)
	}
}

func TestSizeOverRemoteLimit(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t, withMaxSize(40))
	e.mx("small.test", "mx.small.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	r := one(t, c.Send(bg, "small.test", message("a@sender.test", "b@small.test"), nil))
	wantPermanent(t, r, 552, "5.3.4")
	if !strings.Contains(r.Text, "SIZE 40") {
		t.Fatalf("%+v", r)
	}
	if _, mails, _ := srv.stats(); mails != 0 {
		t.Fatal("sent MAIL anyway")
	}
}

func TestDSNParameters(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t, withDSN())
	e.mx("dsn.test", "mx.dsn.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	m := message("a@sender.test")
	m.Ret, m.EnvID = "HDRS", "q12.3"
	m.Rcpts = []Rcpt{{Addr: "b@dsn.test", ORCPT: "rfc822;orig@alias.test", Notify: NotifyFailure | NotifyDelay}, {Addr: "c@dsn.test", Notify: NotifyNever}}
	for _, r := range c.Send(bg, "dsn.test", m, nil) {
		wantDelivered(t, r)
	}
	_, _, msgs := srv.stats()
	if len(msgs) != 1 {
		t.Fatalf("got %+v", msgs)
	}
	g := msgs[0]
	if g.mail.Return != smtp.DSNReturnHeaders || g.mail.EnvelopeID != "q12.3" {
		t.Fatalf("MAIL options %+v", g.mail)
	}
	if !slices.Equal(g.ropts[0].Notify, []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}) ||
		g.ropts[0].OriginalRecipient != "orig@alias.test" || g.ropts[0].OriginalRecipientType != smtp.DSNAddressTypeRFC822 ||
		!slices.Equal(g.ropts[1].Notify, []smtp.DSNNotify{smtp.DSNNotifyNever}) {
		t.Fatalf("RCPT options %+v", g.ropts)
	}
}

func TestHeaderPrepended(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.mx("hdr.test", "mx.hdr.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	m := message("", "b@hdr.test")
	m.Header = []byte("DKIM-Signature: v=1; d=sender.test\r\n")
	wantDelivered(t, one(t, c.Send(bg, "hdr.test", m, nil)))
	_, _, msgs := srv.stats()
	if len(msgs) != 1 || msgs[0].from != "" || msgs[0].data != string(m.Header)+testBody {
		t.Fatalf("got %+v", msgs)
	}
}

func TestBeforeCommitAbandons(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.mx("fence.test", "mx.fence.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	calls := 0
	rs := c.Send(bg, "fence.test", message("a@sender.test", "a@fence.test", "b@fence.test"), func() error {
		calls++
		return errors.New("lease lost")
	})
	if calls != 1 {
		t.Fatalf("beforeCommit called %d times", calls)
	}
	for _, r := range rs {
		wantTemporary(t, r, "lease lost")
	}
	waitFor(t, "the server to see the transaction end", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.dataErrs == 1
	})
	if _, _, msgs := srv.stats(); len(msgs) != 0 {
		t.Fatalf("server stored %+v after an abandoned transaction", msgs)
	}
	// The next Send works (a fresh connection), and a nil error commits.
	wantDelivered(t, one(t, c.Send(bg, "fence.test", message("a@sender.test", "a@fence.test"), func() error { return nil })))
}

func TestConnectionReuse(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t, withTLS(issue(t, nil, "mx.reuse.test")))
	e.mx("reuse.test", "mx.reuse.test", 10, "127.0.1.1", srv)
	c := e.client(func(c *Config) { c.IdleTimeout = time.Minute })
	for i := range 3 {
		wantDelivered(t, one(t, c.Send(bg, "reuse.test", message("a@sender.test", fmt.Sprintf("u%d@reuse.test", i)), nil)))
	}
	conns, _, msgs := srv.stats()
	if conns != 1 || len(msgs) != 3 {
		t.Fatalf("%d connections for %d messages, want 1 for 3", conns, len(msgs))
	}
	for _, m := range msgs {
		if !m.tls || len(m.rcpts) != 1 {
			t.Fatalf("got %+v", m)
		}
	}
	// A connection the remote closed meanwhile is replaced, not an error.
	srv.srv.Close()
	srv2 := newMX(t)
	e.net.set("127.0.1.1:2525", srv2.addr)
	wantDelivered(t, one(t, c.Send(bg, "reuse.test", message("a@sender.test", "x@reuse.test"), nil)))
}

func TestConcurrencyLimitPerDestination(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	srv.hold = make(chan struct{})
	e.mx("conc.test", "mx.conc.test", 10, "127.0.1.1", srv)
	c := e.client(func(c *Config) { c.MaxPerDestination = 2 })
	const n = 5
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = one(t, c.Send(bg, "conc.test", message("a@sender.test", fmt.Sprintf("u%d@conc.test", i)), nil))
		}()
	}
	waitFor(t, "two transactions in DATA and three Sends waiting", func() bool {
		srv.mu.Lock()
		inData := srv.inData
		srv.mu.Unlock()
		return inData == 2 && c.waitingFor("conc.test") == n-2
	})
	if conns, _, _ := srv.stats(); conns != 2 {
		t.Fatalf("%d connections while 3 Sends wait, want 2", conns)
	}
	close(srv.hold)
	wg.Wait()
	for _, r := range results {
		wantDelivered(t, r)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.maxInData != 2 || len(srv.msgs) != n {
		t.Fatalf("max %d in DATA at once (want 2), %d messages", srv.maxInData, len(srv.msgs))
	}
}

func TestRelayWithAuth(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t, withTLS(issue(t, e.ca, "relay.test")), withAuth("bob", "s3cret"))
	e.host("relay.test", "127.0.3.1", nil)
	e.net.set("127.0.3.1:2587", srv.addr)
	c := e.client(func(c *Config) { c.Relay, c.RelayUsername, c.RelayPassword = "relay.test:2587", "bob", "s3cret" })
	r := one(t, c.Send(bg, "far.test", message("a@sender.test", "b@far.test"), nil))
	wantDelivered(t, r)
	if r.Host != "relay.test" {
		t.Fatalf("%+v", r)
	}
	if e.dns.asked("MX ") || e.dns.asked("TXT ") {
		t.Fatalf("relay mode looked up MX/MTA-STS: %v", e.dns.queries)
	}
	if _, _, msgs := srv.stats(); len(msgs) != 1 || msgs[0].user != "bob" || !msgs[0].tls {
		t.Fatalf("relay got %+v", msgs)
	}
	bad := e.client(func(c *Config) { c.Relay, c.RelayUsername, c.RelayPassword = "relay.test:2587", "bob", "wrong" })
	wantTemporary(t, one(t, bad.Send(bg, "far.test", message("a@sender.test", "b@far.test"), nil)), "relay authentication failed")
}

func TestGreetingTimeoutIsTemporary(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() }) // accepts, never greets
		}
	}()
	e.dns.setMX("mute.test", MX{Host: "mx.mute.test", Pref: 1})
	e.dns.setIP("mx.mute.test", "127.0.1.1")
	e.net.set("127.0.1.1:2525", l.Addr().String())
	c := e.client(func(c *Config) { c.GreetingTimeout = 100 * time.Millisecond })
	wantTemporary(t, one(t, c.Send(bg, "mute.test", message("a@sender.test", "b@mute.test"), nil)), "no greeting")
}

func TestBadAddressesArePermanent(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.mx("addr.test", "mx.addr.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	rs := c.Send(bg, "addr.test", message("a@sender.test", "ok@addr.test", "bad\r\nRSET@addr.test"), nil)
	wantDelivered(t, rs[0])
	wantPermanent(t, rs[1], 553, "5.1.3")
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func TestRelayImplicitTLS(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t, withImplicitTLS(issue(t, e.ca, "smtps.relay.test")), withAuth("bob", "s3cret"))
	e.host("smtps.relay.test", "127.0.3.2", nil)
	e.net.set("127.0.3.2:2465", srv.addr)
	c := e.client(func(c *Config) {
		c.Relay, c.RelayUsername, c.RelayPassword, c.RelayImplicitTLS = "smtps.relay.test:2465", "bob", "s3cret", true
	})
	wantDelivered(t, one(t, c.Send(bg, "far.test", message("a@sender.test", "b@far.test"), nil)))
	if _, _, msgs := srv.stats(); len(msgs) != 1 || msgs[0].user != "bob" {
		t.Fatalf("relay got %+v", msgs)
	}
}

func TestRecipientLimitSplitsTransactions(t *testing.T) {
	t.Run("LIMITS", func(t *testing.T) {
		srv := testRecipientLimit(t, func(m *mxServer) { m.srv.MaxRecipients = 2 })
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.replies452 != 0 {
			t.Fatalf("%d recipients refused with 452: RCPTMAX not honoured", srv.replies452)
		}
	})
	t.Run("452", func(t *testing.T) { testRecipientLimit(t, func(m *mxServer) { m.txLimit = 2 }) })
}

func testRecipientLimit(t *testing.T, limit srvOpt) *mxServer {
	e := newEnv(t)
	srv := newMX(t, limit)
	e.mx("limit.test", "mx.limit.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	var rcpts []string
	for i := range 5 {
		rcpts = append(rcpts, fmt.Sprintf("u%d@limit.test", i))
	}
	calls := 0
	rs := c.Send(bg, "limit.test", message("a@sender.test", rcpts...), func() error { calls++; return nil })
	for _, r := range rs {
		wantDelivered(t, r)
	}
	conns, _, msgs := srv.stats()
	if conns != 1 || len(msgs) != 3 || calls != 3 {
		t.Fatalf("%d connections, %d transactions, %d fencing checks; want 1, 3, 3", conns, len(msgs), calls)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, m.rcpts...)
	}
	if !slices.Equal(got, rcpts) {
		t.Fatalf("delivered to %v", got)
	}
	return srv
}

func TestCancelWhileRemoteHoldsDATA(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	srv.hold = make(chan struct{})
	e.mx("hold.test", "mx.hold.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	ctx, cancel := context.WithCancel(bg)
	done := make(chan Result, 1)
	go func() { done <- one(t, c.Send(ctx, "hold.test", message("a@sender.test", "b@hold.test"), nil)) }()
	waitFor(t, "the transaction to reach DATA", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.inData == 1
	})
	cancel()
	var r Result
	waitFor(t, "Send to return after cancel", func() bool {
		select {
		case r = <-done:
			return true
		default:
			return false
		}
	})
	wantTemporary(t, r, "end of DATA")
	if c.idleCount("hold.test") != 0 {
		t.Fatal("a cancelled connection was kept for reuse")
	}
}

func TestMTASTSPolicyRefetchedWhenIDChanges(t *testing.T) {
	e := newEnv(t)
	sts, port := e.stsServer("rot.test")
	e.dns.setTXT("_mta-sts.rot.test", "v=STSv1; id=1")
	sts.set("rot.test", "enforce", "mx.rot.test")
	srv := newMX(t, withTLS(issue(t, e.ca, "mx.rot.test")))
	e.mx("rot.test", "mx.rot.test", 10, "127.0.1.1", srv)
	c := e.client(func(c *Config) { c.MTASTSPort = port; c.IdleTimeout = -1 })
	fetches := func() int { sts.mu.Lock(); defer sts.mu.Unlock(); return sts.fetches }
	wantDelivered(t, one(t, c.Send(bg, "rot.test", message("a@sender.test", "b@rot.test"), nil)))
	wantDelivered(t, one(t, c.Send(bg, "rot.test", message("a@sender.test", "b@rot.test"), nil)))
	if fetches() != 1 {
		t.Fatalf("%d fetches, want 1", fetches())
	}
	// A new id: fetched again; the new policy no longer allows the host.
	e.dns.setTXT("_mta-sts.rot.test", "v=STSv1; id=2")
	sts.set("rot.test", "enforce", "other.rot.test")
	wantTemporary(t, one(t, c.Send(bg, "rot.test", message("a@sender.test", "b@rot.test"), nil)), "does not allow MX host mx.rot.test")
	// The TXT record gone: the cached policy (max_age) still holds.
	e.dns.mu.Lock()
	delete(e.dns.txt, "_mta-sts.rot.test")
	e.dns.mu.Unlock()
	wantTemporary(t, one(t, c.Send(bg, "rot.test", message("a@sender.test", "b@rot.test"), nil)), "does not allow MX host mx.rot.test")
	if fetches() != 2 {
		t.Fatalf("%d fetches, want 2", fetches())
	}
}
