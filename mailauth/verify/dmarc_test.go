package verify

import (
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/simnet"
)

// spfPass publishes an SPF record that passes clientIP for domain.
func (e *env) spfPass(domain string) {
	e.set(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
}

func (e *env) fromCheck(mailFrom, from string, header ...string) Result {
	return e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: mailFrom, Message: strings.NewReader(message(from, header...))})
}

func TestDMARCPolicies(t *testing.T) {
	e := newEnv(t)
	e.set("_dmarc.reject.test", "TXT", "v=DMARC1; p=reject")
	e.set("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine; rua=mailto:r@quarantine.test")
	e.set("_dmarc.monitor.test", "TXT", "v=DMARC1; p=none")
	e.set("_dmarc.sampled.test", "TXT", "v=DMARC1; p=reject; pct=0")
	e.set("_dmarc.bad.test", "TXT", "v=DMARC1; p=sometimes")
	e.set("_dmarc.double.test", "TXT", "v=DMARC1; p=reject", "v=DMARC1; p=none")
	e.set("_dmarc.temp.test", "TXT", "v=DMARC1; p=reject")
	e.fail("_dmarc.temp.test", simnet.ServFail)
	e.spfPass("reject.test")
	e.set("_dmarc.spftemp.test", "TXT", "v=DMARC1; p=reject")
	e.set("spftemp.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
	e.fail("spftemp.test", simnet.ServFail)
	e.fail("elsewhere-temp.test", simnet.ServFail)

	cases := []struct {
		name, mailFrom, from string
		result, policy       string
	}{
		{"SPF fails alignment under p=reject", "x@attacker.test", "ceo@reject.test", Fail, PolicyReject},
		{"aligned SPF pass", "bounce@reject.test", "ceo@reject.test", Pass, PolicyNone},
		{"p=quarantine", "x@attacker.test", "a@quarantine.test", Fail, PolicyQuarantine},
		{"p=none", "x@attacker.test", "a@monitor.test", Fail, PolicyNone},
		{"pct=0 softens reject to quarantine", "x@attacker.test", "a@sampled.test", Fail, PolicyQuarantine},
		{"no record", "x@attacker.test", "a@norecord.test", None, PolicyNone},
		{"bad record", "x@attacker.test", "a@bad.test", PermError, PolicyNone},
		{"two records mean none", "x@attacker.test", "a@double.test", None, PolicyNone},
		{"DNS failure", "x@attacker.test", "a@temp.test", TempError, PolicyNone},
		{"aligned SPF temperror under p=reject", "x@spftemp.test", "a@spftemp.test", TempError, PolicyNone},
		{"unaligned SPF temperror under p=reject", "x@elsewhere-temp.test", "a@reject.test", Fail, PolicyReject},
		{"no From address", "x@attacker.test", "undisclosed-recipients:;", PermError, PolicyNone},
	}
	for _, tc := range cases {
		res := e.fromCheck(tc.mailFrom, tc.from)
		if res.DMARC.Result != tc.result || res.Policy != tc.policy {
			t.Errorf("%s: DMARC = %+v, policy %q; want %s, %s", tc.name, res.DMARC, res.Policy, tc.result, tc.policy)
		}
	}
	res := e.fromCheck("x@attacker.test", "ceo@reject.test")
	if h := res.Header("mx.test"); !strings.Contains(h, "dmarc=fail reason=\"no aligned SPF or DKIM pass\" header.from=reject.test;") {
		t.Errorf("header %q lacks the dmarc=fail result", h)
	}
}

func TestDMARCAlignment(t *testing.T) {
	e := newEnv(t)
	e.set("_dmarc.relaxed.test", "TXT", "v=DMARC1; p=reject")
	e.set("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; aspf=s; adkim=s")
	e.spfPass("bounces.relaxed.test")
	e.spfPass("bounces.strict.test")
	e.spfPass("strict.test")

	// SPF: a subdomain of the From domain aligns only in relaxed mode.
	if res := e.fromCheck("b@bounces.relaxed.test", "a@relaxed.test"); res.DMARC.Result != Pass {
		t.Errorf("relaxed SPF alignment: DMARC = %+v, want pass", res.DMARC)
	}
	if res := e.fromCheck("b@bounces.strict.test", "a@strict.test"); res.DMARC.Result != Fail || res.Policy != PolicyReject {
		t.Errorf("strict SPF alignment, subdomain: DMARC = %+v policy %s, want fail, reject", res.DMARC, res.Policy)
	}
	if res := e.fromCheck("b@strict.test", "a@strict.test"); res.DMARC.Result != Pass {
		t.Errorf("strict SPF alignment, same domain: DMARC = %+v, want pass", res.DMARC)
	}

	// DKIM: a signature of the parent domain aligns only in relaxed mode.
	for _, tc := range []struct {
		signDomain, from, want string
	}{
		{"relaxed.test", "a@news.relaxed.test", Pass},
		{"strict.test", "a@news.strict.test", Fail},
		{"news.strict.test", "a@news.strict.test", Pass},
		{"other.test", "a@relaxed.test", Fail},
	} {
		s := newSigner(t, e, tc.signDomain, "k")
		signed := s.sign(message(tc.from), tc.signDomain)
		res := e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "x@attacker.test", Message: strings.NewReader(signed)})
		if len(res.DKIM) != 1 || res.DKIM[0].Result != Pass {
			t.Fatalf("d=%s: DKIM = %+v, want pass", tc.signDomain, res.DKIM)
		}
		if res.DMARC.Result != tc.want {
			t.Errorf("d=%s From %s: DMARC = %+v, want %s", tc.signDomain, tc.from, res.DMARC, tc.want)
		}
	}
}

func TestDMARCOrganisationalDomain(t *testing.T) {
	e := newEnv(t)
	e.set("_dmarc.org.test", "TXT", "v=DMARC1; p=quarantine")
	e.set("_dmarc.sp.test", "TXT", "v=DMARC1; p=none; sp=reject")
	e.set("_dmarc.own.sp.test", "TXT", "v=DMARC1; p=none")

	res := e.fromCheck("x@attacker.test", "a@deep.sub.org.test")
	if res.DMARC.Result != Fail || res.DMARC.RecordDomain != "org.test" || res.Policy != PolicyQuarantine {
		t.Errorf("fallback: DMARC = %+v policy %s, want fail at org.test, quarantine", res.DMARC, res.Policy)
	}
	if !e.queried("_dmarc.deep.sub.org.test", "TXT") || !e.queried("_dmarc.org.test", "TXT") || e.queried("_dmarc.sub.org.test", "TXT") {
		t.Errorf("lookups %v: want _dmarc.deep.sub.org.test then _dmarc.org.test only", e.dns.Queries())
	}
	// sp= governs subdomains found through the organisational domain…
	if res := e.fromCheck("x@attacker.test", "a@sub.sp.test"); res.DMARC.Requested != PolicyReject || res.Policy != PolicyReject {
		t.Errorf("sp for a subdomain: DMARC = %+v policy %s, want reject", res.DMARC, res.Policy)
	}
	// …not the organisational domain itself…
	if res := e.fromCheck("x@attacker.test", "a@sp.test"); res.Policy != PolicyNone || res.DMARC.Result != Fail {
		t.Errorf("p for the domain itself: DMARC = %+v policy %s, want fail, none", res.DMARC, res.Policy)
	}
	// …nor a subdomain with a record of its own.
	if res := e.fromCheck("x@attacker.test", "a@own.sp.test"); res.Policy != PolicyNone || res.DMARC.RecordDomain != "own.sp.test" {
		t.Errorf("own record: DMARC = %+v policy %s, want none from own.sp.test", res.DMARC, res.Policy)
	}
}

// TestDMARCSeveralFromDomains: each From domain is evaluated and the
// strictest outcome wins, so a second address cannot dilute p=reject.
func TestDMARCSeveralFromDomains(t *testing.T) {
	e := newEnv(t)
	e.set("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
	e.spfPass("evil.test")
	res := e.fromCheck("x@evil.test", "me@evil.test, ceo@bank.test")
	if res.FromDomain != "bank.test" || res.DMARC.Result != Fail || res.Policy != PolicyReject {
		t.Errorf("two From addresses: %+v, want bank.test fail reject", res)
	}
	// Two From fields count too.
	res = e.fromCheck("x@evil.test", "me@evil.test", "From: ceo@bank.test")
	if res.FromDomain != "bank.test" || res.Policy != PolicyReject {
		t.Errorf("two From fields: %+v, want bank.test reject", res)
	}
	// A From that net/mail cannot parse still yields its domain.
	res = e.fromCheck("x@evil.test", "\"unterminated <ceo@bank.test>")
	if res.FromDomain != "bank.test" || res.Policy != PolicyReject {
		t.Errorf("malformed From: %+v, want bank.test reject", res)
	}
}
