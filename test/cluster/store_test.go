package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

const testPassword = "correct horse battery"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// withAccounts creates example.test with the given local parts.
func withAccounts(t *testing.T, c *Cluster, users ...string) {
	t.Helper()
	s := c.Node(c.Leader()).Store()
	RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), "example.test"); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil // an earlier attempt of unknown outcome was committed
	})
	for _, u := range users {
		RetryIdempotent(t, "add "+u, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: u + "@example.test", Password: testPassword})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil
			}
			return err
		})
	}
}

func testMessage(i int, extra string) []byte {
	return []byte(fmt.Sprintf("From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: message %d\r\n"+
		"Message-ID: <%d.%d@remote.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nBody of message %d.\r\n%s\r\n",
		i, i, time.Now().UnixNano(), i, extra))
}

func deliver(t *testing.T, n *node.Node, body []byte, to ...string) replication.Delivered {
	t.Helper()
	var rcpts []replication.Recipient
	for _, u := range to {
		rcpts = append(rcpts, replication.Recipient{Account: u + "@example.test"})
	}
	d := Deliver(t, n, body, rcpts)
	for i, r := range d.Results {
		if r.Err() != nil {
			t.Fatalf("recipient %s: %v", to[i], r.Err())
		}
	}
	return d
}

// inbox reads every message body of a user's INBOX through node n, after a
// read barrier, keyed by SHA-256.
func inbox(t *testing.T, n *node.Node, user string) map[[32]byte]int {
	t.Helper()
	account := user + "@example.test"
	s := n.Store()
	// The barrier fails for a while during an election: open again then.
	var mb replication.OpenedMailbox
	Retry(t, "open INBOX on "+n.ID(), func() (err error) {
		mb, err = s.OpenMailbox(ctxT(t), account, "INBOX")
		return err
	})
	out := make(map[[32]byte]int)
	err := s.Messages(ctxT(t), account, mb.ID, 1, 0, func(m state.Message) error {
		b, err := s.OpenBody(ctxT(t), m.Blob)
		if err != nil {
			return fmt.Errorf("body of UID %d: %w", m.UID, err)
		}
		defer b.Close()
		raw, err := io.ReadAll(b)
		if err != nil {
			return err
		}
		if int64(len(raw)) != m.Size {
			return fmt.Errorf("UID %d: %d bytes, record says %d", m.UID, len(raw), m.Size)
		}
		out[sha256.Sum256(raw)]++
		return nil
	})
	if err != nil {
		t.Fatalf("read INBOX on %s: %v", n.ID(), err)
	}
	return out
}

func sums(bodies ...[]byte) map[[32]byte]int {
	out := make(map[[32]byte]int)
	for _, b := range bodies {
		out[sha256.Sum256(b)]++
	}
	return out
}

func sameSet(a, b map[[32]byte]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestDeliveredMessageSurvivesLossOfAnyNode(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice")
	var bodies [][]byte
	for i := range 6 {
		b := testMessage(i, strings.Repeat("line of text\r\n", i*50))
		bodies = append(bodies, b)
		deliver(t, c.Node(i%3), b, "alice")
	}
	want := sums(bodies...)
	// Lose the leader, then (after it returns) a follower.
	for _, victim := range []int{c.Leader(), c.Follower()} {
		c.Kill(victim)
		c.Leader() // the survivors' reads pass a barrier: wait out an election
		for _, i := range c.Running() {
			if got := inbox(t, c.Node(i), "alice"); !sameSet(got, want) {
				t.Fatalf("with %s dead, %s reads %d messages, want the %d delivered bit-exact", c.Members[victim].ID, c.Members[i].ID, len(got), len(want))
			}
		}
		c.Restart(victim)
		c.WaitForVoters(3)
	}
}

func TestWipedNodeConvergesBack(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice", "bob")
	var bodies [][]byte
	for i := range 10 {
		b := testMessage(i, "")
		bodies = append(bodies, b)
		deliver(t, c.Node(i%3), b, "alice", "bob")
	}
	victim := c.Follower()
	c.Kill(victim)
	c.Wipe(victim)
	// Mail keeps arriving while the disk is gone.
	for i := 10; i < 15; i++ {
		b := testMessage(i, "")
		bodies = append(bodies, b)
		deliver(t, c.Node(c.Leader()), b, "alice", "bob")
	}
	c.Restart(victim)
	c.WaitForVoters(3)
	n := c.Node(victim)
	want := sums(bodies...)
	c.WaitFor("the wiped node to hold every body again", func() bool {
		for _, b := range bodies {
			if !n.BlobStore().Has(blobIDOf(b)) {
				return false
			}
		}
		return true
	})
	for _, u := range []string{"alice", "bob"} {
		if got := inbox(t, n, u); !sameSet(got, want) {
			t.Fatalf("wiped node has %d of %d messages for %s", len(got), len(want), u)
		}
	}
}

func TestMinorityRefusesWritesAndNeverAppliesThem(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.ProposeTimeout = 1500 * time.Millisecond }})
	withAccounts(t, c, "alice")
	victim := c.Follower()
	others := c.CutOff(victim)
	lost := testMessage(99, "never acknowledged")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.Node(victim).Store().Deliver(ctx, bytes.NewReader(lost), []replication.Recipient{{Account: "alice@example.test"}}, time.Now(), 0)
	if !errors.Is(err, replication.ErrNoQuorum) || !replication.Temporary(err) {
		t.Fatalf("deliver on the cut-off node: %v, want a temporary no-quorum error", err)
	}
	if _, err := c.Node(victim).Store().CreateMailbox(ctx, "alice@example.test", "Lost", "", false); !errors.Is(err, replication.ErrNoQuorum) {
		t.Fatalf("create mailbox on the cut-off node: %v", err)
	}
	kept := testMessage(1, "acknowledged by the majority")
	deliver(t, c.Node(c.LeaderAmong(others)), kept, "alice")
	c.Heal()
	c.WaitForVoters(3)
	c.Leader() // every node, the healed one too, follows the leader again
	for _, i := range c.Running() {
		if got := inbox(t, c.Node(i), "alice"); !sameSet(got, sums(kept)) {
			t.Fatalf("%s: INBOX has %d messages; the refused one must never appear", c.Members[i].ID, len(got))
		}
	}
}

func TestRetriedProposalAppliesOnceAcrossLeaderChange(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice")
	body := testMessage(1, "")
	// Store the body first, the way Deliver does, then replay the same
	// proposal ID after the leader that committed it is gone.
	first := deliver(t, c.Node(c.Leader()), body, "alice")
	cmd, err := state.Encode(state.Deliver{Time: time.Now().UnixNano(), Blob: first.Blob, Size: first.Size,
		Targets: []state.DeliverTarget{{Account: "alice@example.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := consensus.ProposalID{1, 2, 3, 4}
	leader := c.Leader()
	r1 := proposeWithID(t, c.Node(leader), id, cmd)
	c.Kill(leader)
	f := c.Leader()
	r2 := proposeWithID(t, c.Node(f), id, cmd)
	if !bytes.Equal(r1.Data, r2.Data) {
		t.Fatalf("the retry got a different result:\n%s\n%s", r1.Data, r2.Data)
	}
	var mb replication.OpenedMailbox
	Retry(t, "open INBOX", func() (err error) {
		mb, err = c.Node(f).Store().OpenMailbox(ctxT(t), "alice@example.test", "INBOX")
		return err
	})
	if len(mb.UIDs) != 2 { // the first delivery plus the proposal, once
		t.Fatalf("INBOX has %d messages, want 2", len(mb.UIDs))
	}
}

func blobPath(n *node.Node, id [32]byte) string {
	h := fmt.Sprintf("%x", id)
	return filepath.Join(n.BlobStore().Dir(), h[0:2], h[2:4], h)
}

func blobIDOf(body []byte) [32]byte { return sha256.Sum256(body) }

func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptBodyDetectedOnReadAndRepairedByScrub(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice")
	body := testMessage(7, strings.Repeat("some text to compress\r\n", 200))
	deliver(t, c.Node(0), body, "alice")
	id := blobIDOf(body)
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("every replica", func() bool { return n.BlobStore().Has(id) })
	}

	// Read path: node 1's copy rots; a read detects it and still answers
	// with the right bytes, fetched from a healthy replica.
	corrupt(t, blobPath(c.Node(1), id))
	if got := inbox(t, c.Node(1), "alice"); !sameSet(got, sums(body)) {
		t.Fatal("read through the node with the corrupt copy returned wrong content")
	}
	if c.Node(1).Bodies().Stats().CorruptFound == 0 {
		t.Fatal("the corrupt copy was not counted")
	}

	// Scrub path: node 2's copy rots; scrub finds and replaces it. Scrub
	// replaces only what the local state references, so let node 2 apply
	// the delivery first (it committed without waiting for node 2).
	n2 := c.Node(2)
	Retry(t, "read barrier on "+n2.ID(), func() error { return n2.Store().Barrier(ctxT(t)) })
	corrupt(t, blobPath(n2, id))
	if err := n2.Bodies().Scrub(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := n2.BlobStore().Verify(ctxT(t), id); err != nil {
		t.Fatalf("after scrub, node3's copy: %v", err)
	}
	if n2.Bodies().Stats().Repaired == 0 {
		t.Fatal("scrub did not count a repair")
	}
}

func TestThreeRecipientsOneBody(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice", "bob", "carol")
	body := testMessage(3, "")
	d := deliver(t, c.Node(1), body, "alice", "bob", "carol")
	if d.Blob != state.BlobID(blobIDOf(body)) {
		t.Fatal("blob ID is not the SHA-256 of the body")
	}
	n := c.Node(1)
	// Deliver does not wait for the delivering node to apply; a reader uses
	// the barrier.
	Retry(t, "read barrier on "+n.ID(), func() error { return n.Store().Barrier(ctxT(t)) })
	var refs uint64
	var files int
	_ = n.FSM().View(func(tx *state.Tx) error {
		b, err := tx.Blob(d.Blob)
		refs = b.Refs
		return err
	})
	_ = n.BlobStore().Walk(ctxT(t), func(_ blob.ID, _ time.Time) error { files++; return nil })
	if refs != 3 || files != 1 {
		t.Fatalf("refs = %d, files = %d; want one body referenced 3 times", refs, files)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if got := inbox(t, n, u); !sameSet(got, sums(body)) {
			t.Fatalf("%s did not get the message", u)
		}
	}
}

func TestExpungedBodyFreedAfterGrace(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.GCGrace = 500 * time.Millisecond
		cfg.GCInterval = 200 * time.Millisecond
	}})
	withAccounts(t, c, "alice", "bob")
	body := testMessage(5, "")
	deliver(t, c.Node(0), body, "alice", "bob")
	id := blobIDOf(body)
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("every replica", func() bool { return n.BlobStore().Has(id) })
	}
	s := c.Node(0).Store()
	for _, u := range []string{"alice", "bob"} {
		var mb replication.OpenedMailbox
		Retry(t, "open INBOX of "+u, func() (err error) {
			mb, err = s.OpenMailbox(ctxT(t), u+"@example.test", "INBOX")
			return err
		})
		// One reference gone: the body must stay. Expunging the same UIDs
		// again expunges nothing more: safe to retry after an election.
		RetryIdempotent(t, "expunge "+u+"'s INBOX", func() error {
			_, err := s.Expunge(ctxT(t), u+"@example.test", mb.ID, state.UIDSetOf(mb.UIDs...), false)
			return err
		})
		if u == "alice" {
			time.Sleep(time.Second) // longer than the grace period and several GC passes
			for _, i := range c.Running() {
				if !c.Node(i).BlobStore().Has(id) {
					t.Fatalf("%s deleted a body bob still references", c.Members[i].ID)
				}
			}
		}
	}
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("the unreferenced body to be deleted on "+n.ID(), func() bool { return !n.BlobStore().Has(id) })
	}
}

// A login through a node still catching up follows a password change or a
// disabled flag made through another node just before: a compromised
// account is shut out everywhere at once.
func TestLoginFollowsAccountChangesOnEveryNode(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.ProposeTimeout = 1500 * time.Millisecond }})
	withAccounts(t, c, "alice", "bob")
	lagging := c.Follower()
	others := c.CutOff(lagging)
	// Cut off, the node still lets known accounts in from its own state.
	if _, err := c.Node(lagging).Store().Authenticate(ctxT(t), "alice@example.test", testPassword); err != nil {
		t.Fatalf("login on the cut-off node: %v", err)
	}
	s := c.Node(c.LeaderAmong(others)).Store()
	// Setting the same flag or password twice sets it once: retried
	// across an election.
	RetryIdempotent(t, "disable alice", func() error { return s.SetUserDisabled(ctxT(t), "alice@example.test", true) })
	RetryIdempotent(t, "change bob's password", func() error {
		return s.SetPassword(ctxT(t), "bob@example.test", "bob's new password")
	})
	c.Heal()
	c.Leader() // the healed node follows again; it may still trail the log
	n := c.Node(lagging).Store()
	if err := authenticate(t, n, "alice@example.test", testPassword); !errors.Is(err, replication.ErrAuthFailed) {
		t.Errorf("disabled account logs in through the lagging node: %v", err)
	}
	if err := authenticate(t, n, "bob@example.test", testPassword); !errors.Is(err, replication.ErrAuthFailed) {
		t.Errorf("the old password works through the lagging node: %v", err)
	}
	if err := authenticate(t, n, "bob@example.test", "bob's new password"); err != nil {
		t.Errorf("the new password through the lagging node: %v", err)
	}
}

// authenticate logs in through s and returns the answer, asking again
// while the answer is a temporary failure (an election: the login's read
// barrier cannot reach the leader): only a definite answer counts.
func authenticate(t *testing.T, s *replication.Store, user, password string) error {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		_, err := s.Authenticate(ctxT(t), user, password)
		if !replication.Temporary(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proposeWithID proposes cmd under id through n until it is committed. An
// election can make an attempt fail with no quorum or an unknown outcome;
// proposing again under the same ID is what the ID is for.
func proposeWithID(t *testing.T, n *node.Node, id consensus.ProposalID, cmd []byte) consensus.Result {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		res, err := n.Consensus().ProposeWithID(ctxT(t), id, cmd)
		if err == nil {
			return res
		}
		temporary := errors.Is(err, consensus.ErrNoQuorum) || errors.Is(err, consensus.ErrOutcomeUnknown)
		if !temporary || time.Now().After(deadline) {
			t.Fatalf("propose through %s: %v", n.ID(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The harness's own promise: a setup delivery whose outcome is unknown is
// counted once whether it was committed (the answer was lost) or not (it
// is sent again). Both cases are staged: the first attempt reports an
// unknown outcome after delivering, or without delivering.
func TestRetryResolvingAppliesAnUnknownOutcomeOnce(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice")
	n := c.Node(c.Follower())
	rcpts := []replication.Recipient{{Account: "alice@example.test"}}
	unknown := fmt.Errorf("%w: %w", replication.ErrOutcomeUnknown, replication.ErrNoQuorum)
	var bodies [][]byte
	for _, committed := range []bool{true, false} {
		body := testMessage(len(bodies), fmt.Sprintf("first attempt committed: %v", committed))
		bodies = append(bodies, body)
		attempts := 0
		RetryResolving(t, n, "staged delivery", func() error {
			attempts++
			if attempts == 1 && !committed {
				return unknown
			}
			if _, err := n.Store().Deliver(ctxT(t), bytes.NewReader(body), rcpts, time.Now(), 0); err != nil {
				return err
			}
			if attempts == 1 {
				return unknown
			}
			return nil
		}, func() (bool, error) {
			held, err := Holding(n, body, rcpts)
			return held != nil, err
		})
		if want := map[bool]int{true: 1, false: 2}[committed]; attempts != want {
			t.Fatalf("first attempt committed %v: %d attempts, want %d", committed, attempts, want)
		}
	}
	if got := inbox(t, n, "alice"); !sameSet(got, sums(bodies...)) {
		t.Fatalf("INBOX has %d messages, want each of the %d once", len(got), len(bodies))
	}
}
