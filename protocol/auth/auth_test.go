package auth

import (
	"net"
	"testing"
	"time"
)

func TestPlaintextOnlyOverTLSOrLoopback(t *testing.T) {
	lo := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000}
	lo6 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 5000}
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5000}
	cases := []struct {
		addr net.Addr
		tls  bool
		want bool
	}{{lo, false, true}, {lo6, false, true}, {remote, false, false}, {remote, true, true}, {nil, false, false}}
	for _, c := range cases {
		if got := PlaintextAllowed(c.addr, c.tls); got != c.want {
			t.Errorf("PlaintextAllowed(%v, tls=%v) = %v", c.addr, c.tls, got)
		}
	}
}

func TestClientIPGroupsIPv6By64(t *testing.T) {
	a := ClientIP(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1})
	b := ClientIP(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 2})
	if a != b || a != "2001:db8:1:2::/64" {
		t.Fatalf("%q %q", a, b)
	}
	if got := ClientIP(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 3}); got != "192.0.2.1" {
		t.Fatal(got)
	}
}

func TestLimiterBlocksAddressAndSlowsAccount(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewLimiter(LimiterOptions{IPFailures: 3, AccountFailures: 5, Window: time.Minute, Block: 10 * time.Second, MaxBlock: 40 * time.Second})
	l.now = func() time.Time { return now }
	for range 2 {
		l.Failed("192.0.2.1", "alice@example.test")
	}
	if ok, _ := l.Allow("192.0.2.1"); !ok {
		t.Fatal("blocked too early")
	}
	l.Failed("192.0.2.1", "alice@example.test")
	if ok, wait := l.Allow("192.0.2.1"); ok || wait != 10*time.Second {
		t.Fatalf("third failure: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.Allow("192.0.2.2"); !ok {
		t.Fatal("another address is blocked too")
	}
	now = now.Add(11 * time.Second)
	l.Failed("192.0.2.1", "alice@example.test") // still 4 in the window: longer block
	if _, wait := l.Allow("192.0.2.1"); wait != 20*time.Second {
		t.Fatalf("second block %v, want doubled", wait)
	}
	if d := l.AccountDelay("ALICE@example.test"); d != 0 {
		t.Fatalf("account slowed after 4 failures: %v", d)
	}
	l.Failed("198.51.100.1", "alice@example.test")
	if d := l.AccountDelay("alice@example.test"); d == 0 {
		t.Fatal("account not slowed after 5 failures from several addresses")
	}
	now = now.Add(2 * time.Minute)
	if d := l.AccountDelay("alice@example.test"); d != 0 {
		t.Fatal("account still slowed after the window passed")
	}
	l.Succeeded("192.0.2.1")
	if ok, _ := l.Allow("192.0.2.1"); !ok {
		t.Fatal("a good login did not clear the address")
	}
}

func TestConnLimitCountsTotalAndPerAddress(t *testing.T) {
	l := NewConnLimit(3, 2)
	a1, r := l.Admit("192.0.2.1")
	if r != "" {
		t.Fatalf("first connection refused: %s", r)
	}
	if _, r := l.Admit("192.0.2.1"); r != "" {
		t.Fatalf("second connection refused: %s", r)
	}
	if rel, r := l.Admit("192.0.2.1"); rel != nil || r != TooManyFromAddress {
		t.Fatalf("third from one address: %v, want %s", r, TooManyFromAddress)
	}
	if _, r := l.Admit("192.0.2.2"); r != "" {
		t.Fatalf("another address refused: %s", r)
	}
	if _, r := l.Admit("192.0.2.3"); r != TooManyConnections {
		t.Fatalf("fourth connection: %v, want %s", r, TooManyConnections)
	}
	a1()
	a1() // a second release frees nothing more
	if got := l.Open(); got != 2 {
		t.Fatalf("open after one release = %d, want 2", got)
	}
	if _, r := l.Admit("192.0.2.3"); r != "" {
		t.Fatalf("slot not freed: %s", r)
	}
	if _, r := l.Admit("192.0.2.4"); r != TooManyConnections {
		t.Fatalf("over the total again: %v", r)
	}
}
