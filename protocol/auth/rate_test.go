package auth

import (
	"net"
	"testing"
	"time"
)

func TestRateLimitsPerNetworkAndWindow(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r := NewRate(3, time.Minute, func() time.Time { return now })
	a, b := net.ParseIP("198.51.100.1"), net.ParseIP("198.51.100.2")
	for i := range 3 {
		if ok, _ := r.Allow(a); !ok {
			t.Fatalf("event %d refused", i+1)
		}
	}
	if ok, wait := r.Allow(a); ok || wait <= 0 || wait > time.Minute {
		t.Fatalf("fourth event: ok %v wait %v", ok, wait)
	}
	if ok, _ := r.Allow(b); !ok {
		t.Fatal("another address shares the count")
	}
	// IPv6 addresses of one /64 share a count.
	v6a, v6b := net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::ffff")
	for range 3 {
		r.Allow(v6a)
	}
	if ok, _ := r.Allow(v6b); ok {
		t.Fatal("a /64 got more than its limit")
	}
	now = now.Add(time.Minute)
	if ok, _ := r.Allow(a); !ok {
		t.Fatal("the next window is still refused")
	}
}

func TestRateForgetsNetworksBeyondItsBound(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r := NewRate(1, time.Minute, func() time.Time { return now })
	for i := range maxTracked + 10 {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
		r.Allow(ip)
	}
	if n := len(r.counts); n > maxTracked {
		t.Fatalf("tracks %d networks, bound %d", n, maxTracked)
	}
}

func TestConnLimitRateRefusesTooFrequentConnections(t *testing.T) {
	l := NewConnLimit(100, 100).WithRate(2)
	for i := range 2 {
		release, why := l.Admit("192.0.2.1")
		if release == nil {
			t.Fatalf("connection %d refused: %s", i+1, why)
		}
		release()
	}
	if release, why := l.Admit("192.0.2.1"); release != nil || why != TooFrequent {
		t.Fatalf("third connection in a minute: %v", why)
	}
	if release, _ := l.Admit("192.0.2.2"); release == nil {
		t.Fatal("another address was refused")
	}
}
