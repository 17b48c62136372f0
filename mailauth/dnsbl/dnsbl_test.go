package dnsbl

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/simnet"
)

func newDNS(t *testing.T) (*simnet.DNS, *dnsclient.Resolver) {
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
	return d, r
}

func set(t *testing.T, d *simnet.DNS, name, typ string, records ...string) {
	t.Helper()
	if err := d.Set(name, typ, records...); err != nil {
		t.Fatal(err)
	}
}

func TestQueryName(t *testing.T) {
	cases := []struct{ ip, zone, want string }{
		{"192.0.2.1", "zen.test", "1.2.0.192.zen.test"},
		{"192.0.2.1", " .zen.test. ", "1.2.0.192.zen.test"},
		{"::ffff:192.0.2.1", "zen.test", "1.2.0.192.zen.test"},
		{"2001:db8:1:2::ab", "bl.test", "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"},
	}
	for _, tc := range cases {
		got, err := QueryName(net.ParseIP(tc.ip), tc.zone)
		if err != nil || got != tc.want {
			t.Errorf("QueryName(%s, %q) = %q, %v; want %q", tc.ip, tc.zone, got, err, tc.want)
		}
	}
	for _, zone := range []string{"", ".", "a..b", "bad zone", strings.Repeat("a", 64) + ".test", "x;y"} {
		if _, err := QueryName(net.ParseIP("192.0.2.1"), zone); err == nil {
			t.Errorf("zone %q accepted", zone)
		}
	}
	if _, err := QueryName(nil, "zen.test"); err == nil {
		t.Error("a nil address accepted")
	}
}

func TestCheck(t *testing.T) {
	d, r := newDNS(t)
	ctx := context.Background()
	ip := net.ParseIP("192.0.2.1")
	set(t, d, "1.2.0.192.listed.test", "A", "127.0.0.2", "127.0.0.4")
	set(t, d, "1.2.0.192.listed.test", "TXT", "Listed: see https://listed.test/q?192.0.2.1\r\nX-Injected: yes")
	set(t, d, "1.2.0.192.quiet.test", "A", "127.0.0.3")
	set(t, d, "1.2.0.192.refused.test", "A", "127.255.255.254")
	set(t, d, "1.2.0.192.wild.test", "A", "198.51.100.1")
	if err := d.SetFailure("1.2.0.192.broken.test", simnet.ServFail); err != nil {
		t.Fatal(err)
	}

	l, listed, err := Check(ctx, r, ip, []string{"clean.test", "listed.test"})
	if err != nil || !listed || l.Zone != "listed.test" || len(l.Codes) != 2 {
		t.Fatalf("Check = %+v %v %v, want listed by listed.test with 2 codes", l, listed, err)
	}
	if strings.ContainsAny(l.Reason, "\r\n") || !strings.HasPrefix(l.Reason, "Listed: see https://listed.test/q?192.0.2.1") {
		t.Errorf("reason %q: want the TXT text without line breaks", l.Reason)
	}

	// Zone order decides which listing is reported.
	if l, listed, _ := Check(ctx, r, ip, []string{"quiet.test", "listed.test"}); !listed || l.Zone != "quiet.test" || l.Reason != "" {
		t.Errorf("first zone: %+v %v, want quiet.test without a reason", l, listed)
	}

	for _, zones := range [][]string{{"clean.test"}, {"refused.test"}, {"wild.test"}, nil} {
		if l, listed, err := Check(ctx, r, ip, zones); listed || err != nil {
			t.Errorf("zones %v: %+v %v %v, want not listed", zones, l, listed, err)
		}
	}

	// A failing list is an error only when no other list has the address.
	_, listed, err = Check(ctx, r, ip, []string{"broken.test", "clean.test"})
	if listed || !errors.Is(err, dnsclient.ErrTemporary) || !strings.Contains(err.Error(), "broken.test") {
		t.Errorf("broken list: listed %v err %v, want a temporary error naming broken.test", listed, err)
	}
	if l, listed, err := Check(ctx, r, ip, []string{"broken.test", "listed.test"}); !listed || err != nil || l.Zone != "listed.test" {
		t.Errorf("broken and listing lists: %+v %v %v, want listed by listed.test", l, listed, err)
	}

	if _, _, err := Check(ctx, r, ip, []string{"listed.test", "bad zone"}); err == nil || errors.Is(err, dnsclient.ErrTemporary) {
		t.Errorf("bad zone: err %v, want a non-temporary error", err)
	}
}

func TestCheckIPv6(t *testing.T) {
	d, r := newDNS(t)
	ip := net.ParseIP("2001:db8::1")
	name, err := QueryName(ip, "v6.test")
	if err != nil {
		t.Fatal(err)
	}
	set(t, d, name, "A", "127.0.0.2")
	l, listed, err := Check(context.Background(), r, ip, []string{"v6.test"})
	if err != nil || !listed || l.Zone != "v6.test" {
		t.Fatalf("Check = %+v %v %v, want listed", l, listed, err)
	}
	found := false
	for _, q := range d.Queries() {
		if q.Name == name && q.Type == "A" {
			found = true
		}
	}
	if !found {
		t.Errorf("the nibble name %s was not asked: %v", name, d.Queries())
	}
}

func TestCheckTimeout(t *testing.T) {
	d, r := newDNS(t)
	if err := d.SetFailure("1.2.0.192.slow.test", simnet.Drop); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, listed, err := Check(ctx, r, net.ParseIP("192.0.2.1"), []string{"slow.test"})
	if listed || !errors.Is(err, dnsclient.ErrTemporary) {
		t.Errorf("unanswered list: listed %v err %v, want a temporary error", listed, err)
	}
}

func TestSanitize(t *testing.T) {
	if got := sanitize("a\x00b\r\n\tc  d\xff"); got != "a b c d" {
		t.Errorf("sanitize = %q", got)
	}
	if got := sanitize(strings.Repeat("x", 10*MaxReason)); len(got) != MaxReason {
		t.Errorf("sanitize kept %d bytes", len(got))
	}
}

// FuzzSanitize: a list's TXT text, whatever it holds, becomes one short
// line of printable ASCII.
func FuzzSanitize(f *testing.F) {
	f.Add("Listed\r\nX-Injected: yes")
	f.Add("\xff\xfe\x00")
	f.Fuzz(func(t *testing.T, s string) {
		got := sanitize(s)
		if len(got) > MaxReason {
			t.Fatalf("%d bytes", len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < ' ' || got[i] > '~' {
				t.Fatalf("byte %#x in %q", got[i], got)
			}
		}
	})
}
