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
