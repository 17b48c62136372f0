package replication

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication/state"
)

// applyNow applies each proposal to the FSM at once.
type applyNow struct {
	fsm   *state.FSM
	index uint64
}

func (n *applyNow) Propose(ctx context.Context, data []byte) (consensus.Result, error) {
	n.index++
	res, err := n.fsm.Apply([]consensus.Entry{{Index: n.index, Term: 1, Data: data}})
	if err != nil {
		return consensus.Result{}, err
	}
	return consensus.Result{Index: n.index, Data: res[0]}, nil
}
func (n *applyNow) ProposeCommitted(ctx context.Context, data []byte) (consensus.Result, error) {
	return n.Propose(ctx, data)
}
func (n *applyNow) ReadBarrier(context.Context) error               { return nil }
func (n *applyNow) ScopedReadBarrier(context.Context, string) error { return nil }
func (n *applyNow) AwaitLeader(context.Context) error               { return nil }

// VacationDue and ClaimVacation count days from the store's clock.
func TestVacationDays(t *testing.T) {
	fsm, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	s := New(Config{Consensus: &applyNow{fsm: fsm}, State: fsm})
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	if err := s.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(ctx, NewUser{Address: "a@example.org", Password: "a long enough password"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ClaimVacation(ctx, "a@example.org", "bob@example.net", "h", 3); !ok || err != nil {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	for _, c := range []struct {
		after time.Duration
		days  int
		due   bool
	}{
		{time.Hour, 3, false},
		{71 * time.Hour, 3, false},
		{72 * time.Hour, 3, true},
		{23 * time.Hour, 0, false}, // :days below 1 counts as 1
		{24 * time.Hour, 0, true},
		{89 * 24 * time.Hour, 1000, false}, // above 90 counts as 90
		{90 * 24 * time.Hour, 1000, true},
	} {
		now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).Add(c.after)
		if due, err := s.VacationDue(ctx, "a@example.org", "bob@example.net", "h", c.days); due != c.due || err != nil {
			t.Errorf("after %v with days %d: due %v (%v), want %v", c.after, c.days, due, err, c.due)
		}
	}
	now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).Add(2 * 24 * time.Hour)
	if ok, _ := s.ClaimVacation(ctx, "a@example.org", "bob@example.net", "h", 3); ok {
		t.Fatal("a claim within the days won")
	}
	now = now.Add(24 * time.Hour)
	if ok, _ := s.ClaimVacation(ctx, "a@example.org", "bob@example.net", "h", 3); !ok {
		t.Fatal("a claim after the days lost")
	}
}
