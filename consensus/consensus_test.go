package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestProposeOnFollowerIsAppliedEverywhere(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	f := c.follower()
	res := set(t, c.nodes[f].node, "greeting", "hello")
	// Read-your-writes: the proposing follower has applied it already.
	if got := string(c.nodes[f].fsm.get("greeting")); got != "hello" {
		t.Fatalf("proposer sees %q right after Propose", got)
	}
	for _, tn := range c.nodes {
		waitFor(t, tn.id+" to apply", 5*time.Second, func() bool { return tn.node.AppliedIndex() >= res.Index })
		if got := string(tn.fsm.get("greeting")); got != "hello" {
			t.Fatalf("%s has %q", tn.id, got)
		}
	}
}

func TestReadBarrierSeesEarlierWrites(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	for i := range 20 {
		set(t, c.nodes[l].node, "k", fmt.Sprint(i))
		for _, tn := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := tn.node.ReadBarrier(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s read barrier: %v", tn.id, err)
			}
			if got := string(tn.fsm.get("k")); got != fmt.Sprint(i) {
				t.Fatalf("%s read %q after barrier, want %d", tn.id, got, i)
			}
		}
	}
}

func TestLeaderKilledNewLeaderTakesWrites(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	old := c.leader()
	set(t, c.nodes[old].node, "before", "1")
	c.stop(old)
	l := c.leader()
	if l == old {
		t.Fatal("stopped node still leader")
	}
	for i, tn := range c.nodes {
		if tn.node == nil {
			continue
		}
		set(t, tn.node, "after", fmt.Sprint(i))
	}
	// The returning node catches up.
	c.restart(old)
	res := set(t, c.nodes[l].node, "final", "x")
	waitFor(t, "restarted node to catch up", 10*time.Second, func() bool {
		return c.nodes[old].node.AppliedIndex() >= res.Index
	})
	if got := string(c.nodes[old].fsm.get("before")); got != "1" {
		t.Fatalf("restarted node lost an entry: %q", got)
	}
}

func TestRestartReplaysNothingTwice(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	var last Result
	for range 30 {
		data, _ := json.Marshal(kvCommand{Op: "incr", Key: "n"})
		var err error
		if last, err = c.nodes[l].node.Propose(context.Background(), data); err != nil {
			t.Fatal(err)
		}
	}
	victim := (l + 1) % 3
	waitFor(t, "victim applied", 5*time.Second, func() bool { return c.nodes[victim].node.AppliedIndex() >= last.Index })
	c.stop(victim)
	c.restart(victim)
	// Raft replays the whole log into the restarted node; the counter must
	// not move and the state machine must not have re-applied anything.
	data, _ := json.Marshal(kvCommand{Op: "incr", Key: "n"})
	res, err := c.nodes[l].node.Propose(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "victim caught up", 5*time.Second, func() bool { return c.nodes[victim].node.AppliedIndex() >= res.Index })
	if got := u64(c.nodes[victim].fsm.get("n")); got != 31 {
		t.Fatalf("counter after restart = %d, want 31", got)
	}
	if applies := c.nodes[victim].fsm.applies.Load(); applies != 1 {
		t.Fatalf("restarted node applied %d entries, want only the 1 new one", applies)
	}
}

func TestRestartAfterCompactionCatchesUpBySnapshot(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.TrailingLogs = 5 })
	l := c.leader()
	lagging := (l + 1) % 3
	c.stop(lagging)
	var last Result
	for i := range 100 {
		last = set(t, c.nodes[l].node, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	for i, tn := range c.nodes {
		if i == lagging {
			continue
		}
		waitFor(t, "applied", 5*time.Second, func() bool { return tn.node.AppliedIndex() >= last.Index })
		if err := tn.node.Snapshot(); err != nil {
			t.Fatalf("snapshot on %s: %v", tn.id, err)
		}
	}
	c.restart(lagging)
	waitFor(t, "lagging node to catch up", 10*time.Second, func() bool {
		return c.nodes[lagging].node.AppliedIndex() >= last.Index
	})
	if c.nodes[lagging].fsm.restores.Load() == 0 {
		t.Fatal("lagging node caught up without installing a snapshot; the log was not compacted")
	}
	for i := range 100 {
		if got := string(c.nodes[lagging].fsm.get(fmt.Sprintf("k%d", i))); got != fmt.Sprint(i) {
			t.Fatalf("k%d = %q after snapshot install", i, got)
		}
	}
	// And it takes new writes afterwards.
	set(t, c.nodes[lagging].node, "after-snapshot", "ok")
}

func TestMinorityFailsWithNoQuorum(t *testing.T) {
	// A lease long enough that the cut-off leader still leads when the
	// proposal below reaches it on a slow machine, and short enough that it
	// steps down well within the propose timeout (raft wants the heartbeat
	// timeout at least as long as the lease).
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.ProposeTimeout = 1500 * time.Millisecond
		cfg.Timing.HeartbeatTimeout = 500 * time.Millisecond
		cfg.Timing.ElectionTimeout = 500 * time.Millisecond
		cfg.Timing.LeaderLeaseTimeout = 500 * time.Millisecond
	})
	l := c.leader()
	set(t, c.nodes[l].node, "before", "ok")
	// Cut the leader off: it is the minority now.
	var others []string
	for i, tn := range c.nodes {
		if i != l {
			others = append(others, tn.id)
		}
	}
	c.tn.partition([]string{c.nodes[l].id}, others)

	data, _ := json.Marshal(kvCommand{Op: "set", Key: "lost", Value: "never"})
	start := time.Now()
	_, err := c.nodes[l].node.Propose(context.Background(), data)
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("propose on the minority: %v, want ErrNoQuorum", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("minority proposal hung for %v", took)
	}
	// The entry went into the old leader's own log before it noticed it was
	// alone: the caller must not be told it was not stored.
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("propose on a leader that lost its majority: %v, want ErrOutcomeUnknown as well", err)
	}
	// Now the node knows no leader: a new proposal reaches no log at all,
	// and the failure is definite.
	data2, _ := json.Marshal(kvCommand{Op: "set", Key: "lost2", Value: "never"})
	if _, err := c.nodes[l].node.Propose(context.Background(), data2); !errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("propose on a node that knows no leader: %v, want a definite ErrNoQuorum", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[l].node.ReadBarrier(ctx); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("read barrier on the minority: %v, want ErrNoQuorum", err)
	}

	// The majority elects a leader and goes on.
	var majority *testNode
	waitFor(t, "majority leader", 10*time.Second, func() bool {
		for i, tn := range c.nodes {
			if i != l && tn.node.IsLeader() {
				majority = tn
				return true
			}
		}
		return false
	})
	set(t, majority.node, "during", "ok")

	c.tn.heal()
	res := set(t, majority.node, "after", "ok")
	waitFor(t, "old leader to rejoin", 10*time.Second, func() bool {
		return c.nodes[l].node.AppliedIndex() >= res.Index
	})
	for _, tn := range c.nodes {
		for _, key := range []string{"lost", "lost2"} {
			if got := tn.fsm.get(key); len(got) != 0 {
				t.Fatalf("%s applied the failed proposal %s", tn.id, key)
			}
		}
	}
}

func TestMembershipChanges(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	ln := c.nodes[l].node
	// A fourth node joins as nonvoter and is promoted.
	c.nodes = append(c.nodes, &testNode{id: "n4", dir: t.TempDir()})
	c.start(3, "127.0.0.1:0")
	if err := ln.AddNonvoter("n4", c.nodes[3].addr); err != nil {
		t.Fatal(err)
	}
	res := set(t, ln, "k", "v")
	waitFor(t, "n4 to catch up", 10*time.Second, func() bool { return c.nodes[3].node.AppliedIndex() >= res.Index })
	if err := ln.AddVoter("n4", c.nodes[3].addr); err != nil {
		t.Fatal(err)
	}
	cfg, err := ln.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, s := range cfg {
		if s.Voter {
			voters++
		}
	}
	if voters != 4 {
		t.Fatalf("voters = %d, want 4: %+v", voters, cfg)
	}
	// A follower asks to be removed; the leader does it.
	victim := (l + 1) % 3
	if err := c.nodes[victim].node.RequestRemove(context.Background(), c.nodes[victim].id); err != nil {
		t.Fatal(err)
	}
	cfg, _ = ln.Configuration()
	for _, s := range cfg {
		if s.ID == c.nodes[victim].id {
			t.Fatalf("%s still in configuration", s.ID)
		}
	}
	// Leadership transfer moves the leader.
	if err := ln.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new leader", 10*time.Second, func() bool {
		for i, tn := range c.nodes {
			if i != l && i != victim && tn.node != nil && tn.node.IsLeader() {
				return true
			}
		}
		return false
	})
}

func TestPeerStatus(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	f := c.follower()
	st, err := c.nodes[f].node.PeerStatus(context.Background(), c.nodes[l].addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "Leader" || st.ID != c.nodes[l].id {
		t.Fatalf("status = %+v", st)
	}
}

// A follower back from a partition trails the leader for a while (raft's
// replication backoff). A write forwarded through it is committed at once;
// it must be reported as committed, not as a no-quorum failure that a
// client would retry into a duplicate.
func TestCommittedWriteOnLaggingFollowerIsSuccess(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.ProposeTimeout = time.Second })
	l := c.leader()
	f := (l + 1) % 3
	var others []string
	for i, tn := range c.nodes {
		if i != f {
			others = append(others, tn.id)
		}
	}
	c.tn.partition([]string{c.nodes[f].id}, others)
	// Long enough for the leader's replication to the follower to back off.
	var last Result
	deadline := time.Now().Add(4 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		last = set(t, c.nodes[l].node, fmt.Sprintf("during-%d", i), "x")
	}
	c.tn.heal()
	// The follower takes a leader back with its first heartbeat; only then
	// can a write through it be forwarded at all. Usually the old one; on
	// a loaded machine an election may have made another, which serves
	// the test as well.
	waitFor(t, "the follower to know a leader again", 10*time.Second, func() bool {
		id, _ := c.nodes[f].node.Leader()
		return id != ""
	})
	for i := range 5 {
		res := set(t, c.nodes[f].node, fmt.Sprintf("after-%d", i), "y")
		if res.Index <= last.Index {
			t.Fatalf("index %d not after %d", res.Index, last.Index)
		}
	}
}
