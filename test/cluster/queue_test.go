package cluster

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// The outbound queue across real nodes: a message for a local and an
// outside recipient is one commit; a follower claims the outside
// recipient and dies holding the lease; nobody else gets it while the lease
// runs, by the clock the leader writes into the log (not by any node's own
// clock); once that clock passes the lease, the third node's claim wins
// with a new token, and the dead node, back, cannot report under its old
// one.
func TestQueueLeaseMovesToAnotherNodeWhenTheHolderDies(t *testing.T) {
	// The queue is driven by hand here: no worker, no queue clock task.
	c := New(t, Options{Configure: func(i int, cfg *node.Config) { cfg.OutboundOff = true }})
	withAccounts(t, c, "alice")
	leader := c.Leader()
	holder := c.Follower()
	var third int
	for _, i := range c.Running() {
		if i != leader && i != holder {
			third = i
		}
	}
	tick := func(at time.Time) {
		t.Helper()
		if err := c.Node(c.Leader()).Store().QueueTick(ctxT(t), at); err != nil {
			t.Fatalf("tick: %v", err)
		}
	}
	t0 := time.Now()
	tick(t0)

	// Submitted through the third node: one local copy, one queue entry.
	s3 := c.Node(third).Store()
	wake := c.Node(holder).Store().Feed().SubscribeQueue() // a worker's wake-up
	defer wake.Close()
	body := testMessage(1, "for the outside")
	var b replication.Ingested
	Retry(t, "ingest", func() (err error) {
		b, err = s3.Ingest(ctxT(t), bytes.NewReader(body), 0)
		return err
	})
	d, err := s3.CommitDeliveryQueued(ctxT(t), b, []replication.Recipient{{Account: "alice@example.test"}},
		[]state.QueueTarget{{From: "alice@example.test", To: "carol@remote.test", Account: "alice@example.test",
			Expires: t0.Add(5 * 24 * time.Hour).UnixNano()}}, time.Now())
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if len(d.Results) != 1 || d.Results[0].Err() != nil || len(d.Queued) != 1 {
		t.Fatalf("delivered %+v", d)
	}
	id := d.Queued[0]
	// The leader's clock task ticks once entries exist: only an entry the
	// clock was read after is claimable.
	tick(t0)
	if got := inbox(t, c.Node(leader), "alice"); !sameSet(got, sums(body)) {
		t.Fatal("the local copy is missing")
	}

	// The holder's worker is woken by the new entry, sees it due (its own
	// state) and claims it.
	woken := false
	for deadline := time.After(Timeout); !woken; {
		select {
		case <-wake.Ready():
		case <-deadline:
			t.Fatal("no queue event for the new entry on " + c.Members[holder].ID)
		}
		events, _ := wake.Next()
		for _, ev := range events {
			if qc, ok := ev.(state.QueueChanged); ok && slices.Contains(qc.Due, id) {
				woken = true
			}
		}
	}
	s2 := c.Node(holder).Store()
	c.WaitFor("the entry to be due on "+c.Members[holder].ID, func() bool {
		due, _, err := s2.QueueDue(ctxT(t), 10)
		return err == nil && len(due) == 1 && due[0].ID == id
	})
	lease := 5 * time.Second
	first, err := s2.QueueClaim(ctxT(t), c.Members[holder].ID, []state.QueueID{id}, lease)
	if err != nil || !slices.Equal(first.Granted, []state.QueueID{id}) || first.Token == 0 {
		t.Fatalf("first claim: %+v, %v", first, err)
	}
	e, err := s3.QueueEntry(ctxT(t), id)
	if err != nil || e.Lease.Holder != c.Members[holder].ID || e.Lease.Token != first.Token || e.Lease.Until != t0.Add(lease).UnixNano() || e.Attempts != 1 {
		t.Fatalf("entry after the claim: %+v, %v", e, err)
	}

	c.Kill(holder)

	// However long the wall clock runs, the lease holds until the leader's
	// clock passes it: the third node is refused.
	tick(t0.Add(lease - time.Millisecond))
	if r, err := s3.QueueClaim(ctxT(t), c.Members[third].ID, []state.QueueID{id}, lease); err != nil || len(r.Granted) != 0 {
		t.Fatalf("claim while the lease runs: %+v, %v", r, err)
	}
	tick(t0.Add(lease))
	second, err := s3.QueueClaim(ctxT(t), c.Members[third].ID, []state.QueueID{id}, lease)
	if err != nil || !slices.Equal(second.Granted, []state.QueueID{id}) || second.Token <= first.Token {
		t.Fatalf("claim after the lease ran out: %+v (first token %d), %v", second, first.Token, err)
	}

	// The dead holder comes back and reports late under its old token:
	// refused, nothing changes.
	c.Restart(holder)
	late := state.QueueOutcome{ID: id, Kind: state.OutcomeDelivered, Reply: "250 2.0.0 ok", Host: "mx.remote.test"}
	var rep state.ReportResult
	Retry(t, "late report from the restarted holder", func() (err error) {
		rep, err = c.Node(holder).Store().QueueReport(ctxT(t), first.Token, []state.QueueOutcome{late})
		return err
	})
	if len(rep.Outcomes) != 1 || !errors.Is(rep.Outcomes[0].Err(), replication.ErrStaleLease) {
		t.Fatalf("late report: %+v", rep)
	}
	if renewed, err := c.Node(holder).Store().QueueRenew(ctxT(t), first.Token, []state.QueueID{id}, lease); err != nil || len(renewed) != 0 {
		t.Fatalf("late renewal: %v, %v", renewed, err)
	}
	e, err = c.Node(holder).Store().QueueEntry(ctxT(t), id)
	if err != nil || e.Lease.Token != second.Token || e.Lease.Holder != c.Members[third].ID || e.Attempts != 2 {
		t.Fatalf("entry after the late report: %+v, %v", e, err)
	}

	// The new holder's report is taken; the queue empties everywhere and
	// the body is referenced by alice's copy alone.
	rep, err = s3.QueueReport(ctxT(t), second.Token, []state.QueueOutcome{late})
	if err != nil || rep.Outcomes[0].Err() != nil {
		t.Fatalf("report: %+v, %v", rep, err)
	}
	for _, i := range c.Running() {
		s := c.Node(i).Store()
		c.WaitFor("an empty queue on "+c.Members[i].ID, func() bool {
			st, err := s.QueueStats(ctxT(t))
			return err == nil && st.Len == 0
		})
		var refs uint64
		if err := c.Node(i).FSM().View(func(tx *state.Tx) error {
			bl, err := tx.Blob(b.Blob)
			refs = bl.Refs
			return err
		}); err != nil || refs != 1 {
			t.Fatalf("%s: blob refs %d, %v", c.Members[i].ID, refs, err)
		}
	}
}
