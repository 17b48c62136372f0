package verify

import (
	"context"
	"math/rand/v2"
	"net/mail"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// maxFromDomains bounds the distinct From domains DMARC is evaluated for.
const maxFromDomains = 5

// fromDomains returns the distinct domains (lower case) of the addresses in
// every From field, in order, at most maxFromDomains; more reports whether
// there were others. An address list net/mail cannot parse is searched
// for "@domain" runs instead, so a malformed From cannot hide a domain
// that a mail reader would still show.
func fromDomains(h *header) (domains []string, more bool) {
	if h == nil {
		return nil, false
	}
	add := func(d string) {
		d = safeDomain(d)
		if d == "" {
			return
		}
		for _, x := range domains {
			if x == d {
				return
			}
		}
		if len(domains) == maxFromDomains {
			more = true
			return
		}
		domains = append(domains, d)
	}
	for _, v := range h.get("From") {
		if list, err := mail.ParseAddressList(v); err == nil {
			for _, a := range list {
				if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
					add(a.Address[at+1:])
				}
			}
			continue
		}
		for i := 0; i < len(v); i++ {
			if v[i] != '@' {
				continue
			}
			j := i + 1
			for j < len(v) && isDomainByte(v[j]) {
				j++
			}
			add(v[i+1 : j])
		}
	}
	return domains, more
}

func isDomainByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_'
}

// orgDomain is the organisational domain (RFC 7489 §3.2): the public
// suffix plus one label; a name that is itself a public suffix is its own.
func orgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// aligned reports whether an authenticated domain aligns with the From
// domain under mode (RFC 7489 §3.1): strict wants the same name, relaxed
// the same organisational domain.
func aligned(authenticated, from string, mode dmarc.AlignmentMode) bool {
	a := strings.ToLower(strings.TrimSuffix(authenticated, "."))
	if a == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return a == from
	}
	return orgDomain(a) == orgDomain(from)
}

// fetchDMARC reads the one DMARC record at _dmarc.domain. res is "" when
// a record was found, else none, temperror or permerror.
func (c *Checker) fetchDMARC(ctx context.Context, domain string) (rec *dmarc.Record, res, reason string) {
	txts, err := c.r.LookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		if notFound(err) {
			return nil, None, ""
		}
		return nil, TempError, "dmarc record lookup: " + err.Error()
	}
	var found []string
	for _, t := range txts {
		t = strings.TrimSpace(t)
		if t == "v=DMARC1" || strings.HasPrefix(t, "v=DMARC1;") || strings.HasPrefix(t, "v=DMARC1 ") {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return nil, None, ""
	case 1:
	default:
		// RFC 7489 §6.6.3: several records mean none applies.
		return nil, None, "several DMARC records at " + domain
	}
	rec, err = dmarc.Parse(found[0])
	if err != nil {
		return nil, PermError, "bad DMARC record at " + domain + ": " + err.Error()
	}
	return rec, "", ""
}

// evalDMARC evaluates DMARC for one From domain and returns the result and
// the policy to apply (after pct sampling).
func (c *Checker) evalDMARC(ctx context.Context, from string, spfRes SPFResult, dkims []DKIMResult) (DMARCResult, string) {
	recDomain := from
	rec, res, reason := c.fetchDMARC(ctx, from)
	if res == None {
		if org := orgDomain(from); org != from {
			recDomain = org
			rec, res, reason = c.fetchDMARC(ctx, org)
		}
	}
	if res != "" {
		return DMARCResult{Result: res, Reason: reason}, PolicyNone
	}
	out := DMARCResult{RecordDomain: recDomain, Requested: string(rec.Policy)}
	if recDomain != from && rec.SubdomainPolicy != "" {
		out.Requested = string(rec.SubdomainPolicy) // sp: the From domain is a subdomain
	}
	if spfRes.Result == Pass && aligned(spfRes.Domain, from, rec.SPFAlignment) {
		out.Result = Pass
		return out, PolicyNone
	}
	for _, d := range dkims {
		if d.Result == Pass && aligned(d.Domain, from, rec.DKIMAlignment) {
			out.Result = Pass
			return out, PolicyNone
		}
	}
	// An aligned identity whose check failed for a DNS problem may yet be
	// authentic: that is no evidence of a DMARC failure, and a policy
	// applied to it would refuse a sender for good over a lookup that
	// failed (RFC 7489 §6.6.2 leaves it to the receiver: it may defer).
	if spfRes.Result == TempError && aligned(spfRes.Domain, from, rec.SPFAlignment) {
		out.Result, out.Reason = TempError, "the aligned SPF check failed temporarily"
		return out, PolicyNone
	}
	for _, d := range dkims {
		if d.Result == TempError && aligned(d.Domain, from, rec.DKIMAlignment) {
			out.Result, out.Reason = TempError, "an aligned DKIM check failed temporarily"
			return out, PolicyNone
		}
	}
	out.Result, out.Reason = Fail, "no aligned SPF or DKIM pass"
	policy := out.Requested
	if rec.Percent != nil && *rec.Percent < 100 && rand.IntN(100) >= *rec.Percent {
		// RFC 7489 §6.6.4: outside the sampled share, apply the next
		// milder policy.
		switch policy {
		case PolicyReject:
			policy = PolicyQuarantine
		case PolicyQuarantine:
			policy = PolicyNone
		}
		out.Reason += ", policy relaxed by pct"
	}
	switch policy {
	case PolicyNone, PolicyQuarantine, PolicyReject:
	default:
		policy = PolicyNone
	}
	return out, policy
}

// checkDMARC evaluates DMARC for the message's From domain. A message
// without a From domain gets permerror with policy none (RFC 5322 wants
// exactly one From address; refusing it is a format check, not DMARC's).
// Several From domains are each evaluated, and the one asking the
// strictest treatment is reported (RFC 7489 §6.6.1).
func (c *Checker) checkDMARC(ctx context.Context, h *header, spfRes SPFResult, dkims []DKIMResult) (string, DMARCResult, string) {
	domains, more := fromDomains(h)
	if len(domains) == 0 {
		return "", DMARCResult{Result: PermError, Reason: "no From domain"}, PolicyNone
	}
	best, bestDomain, bestPolicy := DMARCResult{}, "", ""
	for i, d := range domains {
		r, p := c.evalDMARC(ctx, d, spfRes, dkims)
		if i == 0 || policyRank(p) > policyRank(bestPolicy) ||
			policyRank(p) == policyRank(bestPolicy) && resultRank(r.Result) > resultRank(best.Result) {
			best, bestDomain, bestPolicy = r, d, p
		}
	}
	if len(domains) > 1 || more {
		if best.Reason != "" {
			best.Reason += ", "
		}
		best.Reason += "several From domains"
	}
	return bestDomain, best, bestPolicy
}

func policyRank(p string) int {
	switch p {
	case PolicyReject:
		return 2
	case PolicyQuarantine:
		return 1
	}
	return 0
}

func resultRank(r string) int {
	switch r {
	case Fail:
		return 4
	case TempError:
		return 3
	case PermError:
		return 2
	case None:
		return 1
	}
	return 0
}
