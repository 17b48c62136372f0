package verify

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/dnsclient"
)

func FuzzForged(f *testing.F) {
	for _, s := range []string{
		"mx.example.net; spf=pass", "(c) mx.example.net 1; none", "\"mx.example.net", "((", "(\\", "\"\\",
		"other; dkim=pass header.d=x", "mx.example.net(", "; ; ;", "",
	} {
		f.Add(s)
	}
	const id = "mx.example.net"
	f.Fuzz(func(t *testing.T, v string) {
		_ = Forged(id, v)
		_ = Forged(v, v)
		// Whatever follows, a value that opens with our id (in any case,
		// after comments, with a version) is ours.
		for _, prefix := range []string{id + "; ", "(c) MX.EXAMPLE.NET 1;", " \"mx.example.net\" ", id + " "} {
			if !Forged(id, prefix+v) {
				t.Fatalf("Forged(%q) = false", prefix+v)
			}
		}
	})
}

// FuzzHeader: whatever the envelope and the signatures say, the field we
// write is one well-formed header field that parses back to our results.
func FuzzHeader(f *testing.F) {
	f.Add("a@example.org", "example.org", "sel", "reason", "helo.test")
	f.Add("\"x;y\"@example.org", "ex;ample", "a b", "\"\\;\r\n", "[1.2.3.4]")
	f.Add("", "", "", "", "")
	f.Fuzz(func(t *testing.T, mailFrom, domain, selector, reason, helo string) {
		r := Result{
			SPF:        SPFResult{Result: TempError, Identity: "mailfrom", MailFrom: mailFrom, Helo: helo, Reason: reason},
			DKIM:       []DKIMResult{{Result: Fail, Domain: domain, Selector: selector, Identifier: mailFrom, Reason: reason}},
			DMARC:      DMARCResult{Result: PermError, Reason: reason},
			IPRev:      IPRevResult{Result: Fail, IP: net.ParseIP("2001:db8::1")},
			FromDomain: domain,
		}
		if len(helo)%2 == 0 {
			r.SPF.Identity = "helo"
		}
		results := checkField(t, "mx.example.net", r.Header("mx.example.net"))
		if len(results) != 4 {
			t.Fatalf("parsed %d results, want 4", len(results))
		}
	})
}

// FuzzReadHeader: the header reader and the From and signature parsers
// take any bytes without panicking, and stay within their bounds.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte(message("a@b.test")))
	f.Add([]byte("From: a@b.test, <c@d.test>\r\n\tx\r\nDKIM-Signature: d=x; s=y\r\n"))
	f.Add([]byte(" leading\r\nno colon\r\nFrom:\r\n\r\n"))
	f.Add([]byte("From: \"@@@\" <@x.test>\nFrom: =?x?q?a?= <a@[1.2.3.4]>\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHeader(bufio.NewReaderSize(bytes.NewReader(data), 16))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, h.raw) || len(h.raw) > MaxHeaderBytes {
			t.Fatalf("raw is not a bounded prefix of the input")
		}
		domains, _ := fromDomains(h)
		if len(domains) > maxFromDomains {
			t.Fatalf("%d From domains", len(domains))
		}
		for _, d := range domains {
			if !validDomain(d) || d != strings.ToLower(d) {
				t.Fatalf("From domain %q", d)
			}
		}
		for _, v := range h.get("DKIM-Signature") {
			_ = parseSigTags(v)
		}
	})
}

// emptyDNS answers every question with "no such record".
type emptyDNS struct{}

func notFoundErr(name string) error {
	return &dnsclient.Error{Name: name, Type: "ANY", Reason: "fuzz", Kind: dnsclient.ErrNotFound}
}
func (emptyDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	if strings.HasPrefix(name, "k._domainkey.") {
		return []string{"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwDr9"}, nil
	}
	return nil, notFoundErr(name)
}
func (emptyDNS) LookupMX(_ context.Context, name string) ([]dnsclient.MX, error) {
	return nil, notFoundErr(name)
}
func (emptyDNS) LookupIP(_ context.Context, name string) ([]net.IP, error) {
	return nil, notFoundErr(name)
}
func (emptyDNS) LookupAddr(_ context.Context, ip net.IP) ([]string, error) {
	return nil, notFoundErr(ip.String())
}

// FuzzCheck runs the whole check, DKIM library included, on hostile
// messages: it must return, without panicking, and never fail for a
// message that was readable.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(message("a@b.test", "DKIM-Signature: v=1; a=rsa-sha256; d=b.test; s=k; h=from; bh=AAAA; b=AAAA")), "a@b.test")
	f.Add([]byte("DKIM-Signature: v=1; v=1\r\nDKIM-Signature:\r\n\r\n"), "")
	f.Add([]byte("DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; d=x.test; s=k; h=from:from; l=99999; bh=; b=\r\nFrom: a@x.test"), "x@")
	c := New(Config{Resolver: emptyDNS{}, Timeout: 10 * time.Second, MaxMessageBytes: 1 << 16})
	f.Fuzz(func(t *testing.T, msg []byte, mailFrom string) {
		res, err := c.Check(context.Background(), Input{IP: net.ParseIP("192.0.2.1"), Helo: "h.test", MailFrom: mailFrom, Message: bytes.NewReader(msg)})
		if err != nil {
			t.Fatalf("Check of a readable message: %v", err)
		}
		if len(res.DKIM) > DefaultMaxSignatures {
			t.Fatalf("%d signatures verified", len(res.DKIM))
		}
		checkField(t, "mx.example.net", res.Header("mx.example.net"))
	})
}
