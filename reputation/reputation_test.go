package reputation

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication/state"
)

// memGreylist keeps triplets in memory the way the state machine does.
type memGreylist struct {
	mu      sync.Mutex
	now     func() time.Time
	entries map[string]state.GreylistEntry
	writes  int
}

func (m *memGreylist) Greylist(_ context.Context, key []byte, maxAge time.Duration) (state.GreylistEntry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[string(key)]
	last := e.First
	if e.Passed != 0 {
		last = e.Passed
	}
	if !ok || m.now().UnixNano()-last > int64(maxAge) {
		return state.GreylistEntry{}, false, nil
	}
	return e, true, nil
}

func (m *memGreylist) RecordGreylist(_ context.Context, key []byte, pass bool, maxAge time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	now := m.now().UnixNano()
	e, ok := m.entries[string(key)]
	if !ok {
		e = state.GreylistEntry{First: now}
	}
	if pass {
		e.Passed = now
	}
	m.entries[string(key)] = e
	return nil
}

func TestGreylistRefusesFirstAttemptsOnly(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := &memGreylist{now: clock, entries: map[string]state.GreylistEntry{}}
	g := NewGreylist(store, GreylistConfig{Delay: time.Minute, Window: time.Hour, Now: clock})
	ctx := context.Background()
	env := delivery.Envelope{Source: delivery.SourceMX, Sender: "a@remote.test", Client: delivery.Client{IP: net.ParseIP("192.0.2.10")}}
	refused := func(err error) bool {
		var rej *delivery.RejectedError
		return errors.As(err, &rej) && !rej.Permanent && rej.Enhanced == "4.7.1"
	}
	if err := g.CheckRecipient(ctx, env, "u@example.test"); !refused(err) {
		t.Fatalf("first attempt: %v", err)
	}
	now = now.Add(30 * time.Second)
	if err := g.CheckRecipient(ctx, env, "u@example.test"); !refused(err) {
		t.Fatalf("retry too soon: %v", err)
	}
	// Another server of the same /24 retrying after the delay gets through.
	now = now.Add(time.Minute)
	env.Client.IP = net.ParseIP("192.0.2.77")
	if err := g.CheckRecipient(ctx, env, "U@example.test"); err != nil {
		t.Fatalf("retry after the delay: %v", err)
	}
	// From then on it passes at once, without a write each time.
	writes := store.writes
	now = now.Add(10 * time.Hour)
	if err := g.CheckRecipient(ctx, env, "u@example.test"); err != nil || store.writes != writes {
		t.Fatalf("a known triplet: %v (writes %d → %d)", err, writes, store.writes)
	}
	// Another recipient is another triplet.
	if err := g.CheckRecipient(ctx, env, "v@example.test"); !refused(err) {
		t.Fatalf("new recipient: %v", err)
	}
	// A retry after the window starts over.
	env.Sender = "late@remote.test"
	if err := g.CheckRecipient(ctx, env, "u@example.test"); !refused(err) {
		t.Fatal("new sender passed")
	}
	now = now.Add(2 * time.Hour)
	if err := g.CheckRecipient(ctx, env, "u@example.test"); !refused(err) {
		t.Fatalf("retry after the window: %v", err)
	}
}

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
