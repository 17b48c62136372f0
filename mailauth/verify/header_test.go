package verify

import (
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

func sampleResult() Result {
	return Result{
		SPF:        SPFResult{Result: Pass, Identity: "mailfrom", Domain: "example.org", MailFrom: "alice@example.org", Helo: "out.example.org"},
		DKIM:       []DKIMResult{{Result: Pass, Domain: "example.org", Selector: "sel", Identifier: "@example.org"}},
		DMARC:      DMARCResult{Result: Pass, RecordDomain: "example.org", Requested: PolicyReject},
		IPRev:      IPRevResult{Result: Pass, IP: net.ParseIP("192.0.2.1"), Name: "out.example.org"},
		FromDomain: "example.org",
		Policy:     PolicyNone,
	}
}

func TestHeaderFormat(t *testing.T) {
	got := sampleResult().Header("mx.example.net")
	want := "Authentication-Results: mx.example.net;\r\n" +
		"\tspf=pass smtp.mailfrom=alice@example.org;\r\n" +
		"\tdkim=pass header.d=example.org header.i=@example.org header.s=sel;\r\n" +
		"\tdmarc=pass header.from=example.org;\r\n" +
		"\tiprev=pass policy.iprev=192.0.2.1\r\n"
	if got != want {
		t.Errorf("Header =\n%q\nwant\n%q", got, want)
	}
	// No signature, no client address, nothing known: still a valid field.
	got = Result{}.Header("mx.example.net")
	want = "Authentication-Results: mx.example.net;\r\n\tspf=none;\r\n\tdkim=none;\r\n\tdmarc=none;\r\n\tiprev=none\r\n"
	if got != want {
		t.Errorf("empty Header = %q, want %q", got, want)
	}
}

// checkField checks a header field is well formed: CRLF lines only, folded
// lines start with white space, no line beyond 998 bytes, and it parses
// back to our id with one result per method.
func checkField(t *testing.T, id, field string) []authres.Result {
	t.Helper()
	if !strings.HasPrefix(field, FieldName+": ") || !strings.HasSuffix(field, "\r\n") {
		t.Fatalf("field %q: bad start or end", field)
	}
	lines := strings.Split(strings.TrimSuffix(field, "\r\n"), "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("field %q: bare CR or LF in line %d", field, i)
		}
		if len(l) > 998 {
			t.Fatalf("field %q: line %d is %d bytes", field, i, len(l))
		}
		if i > 0 && l[0] != ' ' && l[0] != '\t' {
			t.Fatalf("field %q: line %d is not a continuation", field, i)
		}
	}
	value := strings.TrimPrefix(strings.ReplaceAll(strings.TrimSuffix(field, "\r\n"), "\r\n", ""), FieldName+": ")
	if !Forged(id, value) {
		t.Fatalf("our own field %q does not count as ours", value)
	}
	got, results, err := authres.Parse(value)
	if err != nil {
		t.Fatalf("authres cannot parse our field %q: %v", value, err)
	}
	if strings.Trim(got, `"`) != strings.TrimSpace(id) && got != safeID(id) {
		t.Fatalf("parsed id %q, want %q", got, id)
	}
	return results
}

func TestHeaderKeepsHostileValuesOut(t *testing.T) {
	r := sampleResult()
	r.SPF.MailFrom = "\"evil;\r\n X-Injected: yes\"@example.org"
	r.DKIM = []DKIMResult{
		{Result: Fail, Domain: "example.org;\r\nX-Injected: yes", Selector: "a b", Identifier: "x\"@y", Reason: "bad \"sig\"; \\ \r\n X-Injected: yes"},
		{Result: Pass, Domain: "UPPER.Example.ORG.", Selector: "s1", Identifier: "@upper.example.org"},
	}
	r.DMARC = DMARCResult{Result: Fail, Reason: strings.Repeat("long reason ", 100)}
	h := r.Header("mx.example.net")
	if strings.Contains(h, "\r\nX-Injected") || strings.Contains(h, "\nX-") {
		t.Fatalf("injected a header line: %q", h)
	}
	results := checkField(t, "mx.example.net", h)
	if len(results) != 5 {
		t.Fatalf("parsed %d results from %q, want 5", len(results), h)
	}
	if !strings.Contains(h, "smtp.mailfrom=example.org;") {
		t.Errorf("quoted local part not reduced to the domain: %q", h)
	}
	if !strings.Contains(h, "dkim=pass header.d=upper.example.org") {
		t.Errorf("domain not normalised: %q", h)
	}
	for _, l := range strings.Split(h, "\r\n") {
		if len(l) > 80 {
			t.Errorf("line of %d bytes not folded: %q", len(l), l)
		}
	}
}

func TestForged(t *testing.T) {
	const id = "mx.example.net"
	forged := []string{
		"mx.example.net; spf=pass smtp.mailfrom=a@b",
		"MX.Example.NET; dkim=pass",
		"  mx.example.net 1; none",
		"(comment) mx.example.net; spf=pass",
		"(nested (comment)) \t mx.example.net (x); spf=pass",
		"mx.example.net",
		"mx.example.net;",
		"\"mx.example.net\"; spf=pass",
		"mx.example.net 2; spf=pass",     // an unknown version
		"mx.example.net; spf=",           // malformed result
		"mx.example.net; ===;;",          // garbage after our id
		"mx.example.net(unterminated",    // unterminated comment after the id
		"mx.example.net\x00; spf=pass",   // a control byte after the id
		"\r\n mx.example.net; dkim=pass", // folded before the id
		"\"mx.example.net; spf=pass",     // unterminated quoted id
		"((mx.example.net; spf=pass",     // stray comment openers
	}
	for _, v := range forged {
		if !Forged(id, v) {
			t.Errorf("Forged(%q) = false, want true", v)
		}
	}
	notForged := []string{
		"other.example.net; spf=pass",
		"mx.example.net.evil.test; spf=pass",
		"mx.example.network; spf=pass",
		"sub.mx.example.net; spf=pass",
		"",
		"   ",
		"other.test; spf=pass smtp.mailfrom=mx.example.net",
	}
	for _, v := range notForged {
		if Forged(id, v) {
			t.Errorf("Forged(%q) = true, want false", v)
		}
	}
	if Forged("", "mx.example.net; spf=pass") || Forged(" ", "; spf=pass") {
		t.Error("an empty authserv-id matched")
	}
}

func TestSafeID(t *testing.T) {
	// A host name is the normal id; anything else is quoted, and still
	// recognised as ours.
	id := "weird id;\"x\""
	h := Result{}.Header(id)
	if !strings.HasPrefix(h, FieldName+": \"weird id;\\\"x\\\"\";") {
		t.Errorf("id not quoted: %q", h)
	}
	value := strings.TrimPrefix(strings.ReplaceAll(strings.TrimSuffix(h, "\r\n"), "\r\n", ""), FieldName+": ")
	if !Forged(id, value) {
		t.Errorf("Forged(%q, %q) = false", id, value)
	}
	checkField(t, "mx_1.example.net", Result{}.Header("mx_1.example.net"))
}
