package replication_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// oneNode applies every proposal to its FSM at once and counts read
// barriers.
type oneNode struct {
	mu       sync.Mutex
	fsm      *state.FSM
	index    uint64
	barriers int
}

func (n *oneNode) Propose(ctx context.Context, data []byte) (consensus.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.index++
	res, err := n.fsm.Apply([]consensus.Entry{{Index: n.index, Term: 1, Data: data}})
	if err != nil {
		return consensus.Result{}, err
	}
	return consensus.Result{Index: n.index, Data: res[0]}, nil
}

func (n *oneNode) ProposeCommitted(ctx context.Context, data []byte) (consensus.Result, error) {
	return n.Propose(ctx, data)
}

func (n *oneNode) ReadBarrier(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.barriers++
	return nil
}

func (n *oneNode) ScopedReadBarrier(ctx context.Context, scope string) error {
	return n.ReadBarrier(ctx)
}

func (n *oneNode) AwaitLeader(ctx context.Context) error { return nil }

func (n *oneNode) takeBarriers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.barriers
	n.barriers = 0
	return b
}

// The read methods that open or describe a mailbox for a session pass the
// read barrier themselves (DESIGN.md §1 promise 4), so no caller can
// forget it; the ones documented as following the session's own view do
// not pay for one.
func TestReadMethodsKeepTheBarrierRule(t *testing.T) {
	fsm, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	cons := &oneNode{fsm: fsm}
	s := replication.New(replication.Config{Consensus: cons, State: fsm})
	ctx := context.Background()
	const acct = "a@example.org"
	if err := s.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(ctx, replication.NewUser{Address: acct, Password: "a long enough password"}); err != nil {
		t.Fatal(err)
	}
	inbox, err := s.Mailbox(ctx, acct, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	cons.takeBarriers()

	for _, c := range []struct {
		name    string
		barrier bool
		read    func() error
	}{
		{"SelectMailbox", true, func() error {
			sel, err := s.SelectMailbox(ctx, acct, "INBOX", replication.SelectOptions{Children: true})
			if err == nil {
				sel.Changes.Close()
			}
			return err
		}},
		{"MailboxStatus", true, func() error {
			_, err := s.MailboxStatus(ctx, acct, "INBOX", replication.StatusItems{Recent: true, DeletedSize: true})
			return err
		}},
		{"ListMailboxes with status", true, func() error {
			_, err := s.ListMailboxes(ctx, acct, replication.ListOptions{Status: &replication.StatusItems{}})
			return err
		}},
		{"ListMailboxes", true, func() error {
			_, err := s.ListMailboxes(ctx, acct, replication.ListOptions{})
			return err
		}},
		{"OpenMessages", true, func() error {
			_, err := s.OpenMessages(ctx, acct, "INBOX")
			return err
		}},
		{"OpenMailbox", true, func() error {
			_, err := s.OpenMailbox(ctx, acct, "INBOX")
			return err
		}},
		{"MailboxFlags", false, func() error {
			_, err := s.MailboxFlags(ctx, acct, inbox.ID)
			return err
		}},
		{"LoadMessages", false, func() error {
			_, err := s.LoadMessages(ctx, acct, inbox.ID, []uint32{1}, true)
			return err
		}},
		{"HasMessage", false, func() error {
			_, err := s.HasMessage(ctx, acct, inbox.ID, 1)
			return err
		}},
	} {
		if err := c.read(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := cons.takeBarriers() > 0; got != c.barrier {
			t.Errorf("%s: passed a barrier = %v, want %v", c.name, got, c.barrier)
		}
	}

	// Another account's mailbox is not found by ID.
	if _, err := s.AddUser(ctx, replication.NewUser{Address: "b@example.org", Password: "a long enough password"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadMessages(ctx, "b@example.org", inbox.ID, []uint32{1}, false); err != replication.ErrNoSuchMailbox {
		t.Fatalf("LoadMessages of another account's mailbox: %v", err)
	}
	if _, err := s.MailboxFlags(ctx, "b@example.org", inbox.ID); err != replication.ErrNoSuchMailbox {
		t.Fatalf("MailboxFlags of another account's mailbox: %v", err)
	}
	if ok, err := s.HasMessage(ctx, "b@example.org", inbox.ID, 1); ok || err != nil {
		t.Fatalf("HasMessage of another account's mailbox: %v, %v", ok, err)
	}
}
