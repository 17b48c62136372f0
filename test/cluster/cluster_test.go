package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/state"
)

// addDomain proposes a small state change through node n. An election on
// a loaded machine can make an attempt fail for a while (no quorum, or an
// unknown outcome): it proposes again under the same proposal ID, which
// the state machine applies once, as a client retrying after an unknown
// outcome should.
func addDomain(t *testing.T, n *node.Node, name string) consensus.Result {
	t.Helper()
	cmd, err := state.Encode(state.AddDomain{Time: time.Now().UnixNano(), Name: name})
	if err != nil {
		t.Fatal(err)
	}
	var id consensus.ProposalID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(RetryWindow)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := n.Consensus().ProposeWithID(ctx, id, cmd)
		cancel()
		if err == nil {
			return res
		}
		temporary := errors.Is(err, consensus.ErrNoQuorum) || errors.Is(err, consensus.ErrOutcomeUnknown)
		if !temporary || time.Now().After(deadline) {
			t.Fatalf("propose on %s: %v", n.ID(), err)
		}
		t.Logf("propose on %s: %v (proposing again)", n.ID(), err)
		time.Sleep(50 * time.Millisecond)
	}
}

func hasDomain(n *node.Node, name string) bool {
	err := n.FSM().View(func(tx *state.Tx) error {
		_, err := tx.Domain(name)
		return err
	})
	return err == nil
}

func TestBootstrapExpectThree(t *testing.T) {
	c := New(t, Options{Nodes: 3})
	if got := c.Voters(); !slices.Equal(got, []string{"node1", "node2", "node3"}) {
		t.Fatalf("voters = %v", got)
	}
}

func TestBootstrapExpectFive(t *testing.T) {
	c := New(t, Options{Nodes: 5})
	if got := len(c.Voters()); got != 5 {
		t.Fatalf("voters = %d, want 5", got)
	}
}

func TestProposalOnFollowerAppliedEverywhere(t *testing.T) {
	c := New(t, Options{})
	f := c.Follower()
	res := addDomain(t, c.Node(f), "follower.test")
	if !hasDomain(c.Node(f), "follower.test") {
		t.Fatal("the proposing follower does not see its own write")
	}
	c.WaitApplied(res.Index)
	for _, i := range c.Running() {
		if !hasDomain(c.Node(i), "follower.test") {
			t.Fatalf("%s lacks the domain", c.Members[i].ID)
		}
	}
}

func TestLeaderKilledNewLeaderTakesWrites(t *testing.T) {
	c := New(t, Options{})
	old := c.Leader()
	addDomain(t, c.Node(old), "before.test")
	c.Kill(old)
	start := time.Now()
	l := c.Leader()
	t.Logf("new leader %s after %v", c.Members[l].ID, time.Since(start))
	for _, i := range c.Running() {
		addDomain(t, c.Node(i), fmt.Sprintf("after-%d.test", i))
	}
	c.Restart(old)
	res := addDomain(t, c.Node(l), "final.test")
	c.WaitApplied(res.Index)
	if !hasDomain(c.Node(old), "after-"+fmt.Sprint(l)+".test") {
		t.Fatal("restarted node did not catch up")
	}
}

func TestRestartAfterCompactionCatchesUpBySnapshot(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.TrailingLogs = 10
		cfg.SnapshotThreshold = 50
		cfg.SnapshotInterval = 100 * time.Millisecond
	}})
	l := c.Leader()
	lagging := (l + 1) % 3
	c.Kill(lagging)
	var last consensus.Result
	for i := range 200 {
		last = addDomain(t, c.Node(l), fmt.Sprintf("d%03d.test", i))
	}
	c.WaitApplied(last.Index)
	for _, i := range c.Running() {
		// Force the compaction rather than wait for the interval.
		_ = c.Node(i).Consensus().Snapshot()
	}
	c.Restart(lagging)
	c.WaitApplied(last.Index)
	for i := range 200 {
		if !hasDomain(c.Node(lagging), fmt.Sprintf("d%03d.test", i)) {
			t.Fatalf("d%03d.test missing after catching up", i)
		}
	}
	addDomain(t, c.Node(lagging), "after-snapshot.test")
}

func TestRestartReplaysNothingTwice(t *testing.T) {
	c := New(t, Options{})
	l := c.Leader()
	var last consensus.Result
	for i := range 20 {
		last = addDomain(t, c.Node(l), fmt.Sprintf("r%d.test", i))
	}
	victim := (l + 1) % 3
	c.WaitApplied(last.Index)
	before := c.Node(victim).FSM().AppliedIndex()
	c.Kill(victim)
	c.Restart(victim)
	// Raft hands the restarted node its whole log again. Re-applying an
	// AddDomain would fail with "domain exists" and, worse, move nothing
	// visible; so check the state machine's own applied index did not go
	// backwards and that new entries still apply exactly once.
	if got := c.Node(victim).FSM().AppliedIndex(); got < before {
		t.Fatalf("applied index went back from %d to %d", before, got)
	}
	res := addDomain(t, c.Node(l), "after-restart.test")
	c.WaitApplied(res.Index)
	var domains []state.Domain
	if err := c.Node(victim).FSM().View(func(tx *state.Tx) (err error) {
		domains, err = tx.Domains()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(domains) != 21 {
		t.Fatalf("restarted node has %d domains, want 21", len(domains))
	}
}

func TestNewNodeJoinsThroughGossipAndBecomesVoter(t *testing.T) {
	c := New(t, Options{})
	res := addDomain(t, c.Node(c.Leader()), "existing.test")
	i := c.AddNode()
	c.WaitForVoters(4)
	c.WaitApplied(res.Index)
	if !hasDomain(c.Node(i), "existing.test") {
		t.Fatal("the new node did not receive the existing state")
	}
	addDomain(t, c.Node(i), "from-new-node.test")
}

func TestDeadNodeRemovedAfterTimeout(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.DeadServerTimeout = time.Second }})
	l := c.Leader()
	victim := (l + 1) % 3
	c.Kill(victim)
	c.WaitForVoters(2)
	if slices.Contains(c.Voters(), c.Members[victim].ID) {
		t.Fatal("dead node still a voter")
	}
	// It comes back: the leader adds it again.
	c.Restart(victim)
	c.WaitForVoters(3)
}

func TestDeadNodeNotRemovedWhenUnsafe(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.DeadServerTimeout = 300 * time.Millisecond }})
	l := c.Leader()
	var others []int
	for _, i := range c.Running() {
		if i != l {
			others = append(others, i)
		}
	}
	// Gossip on the leader says both others are dead, yet Raft still
	// reaches them: removing one would leave {leader, other} with one
	// live voter in gossip's eyes, below quorum. The leader must not.
	c.PartitionGossip([]int{l}, others)
	var seen []string
	c.WaitFor("gossip to declare the others failed", func() bool {
		n := c.Node(l)
		st, err := n.ClusterStatus(context.Background())
		if err != nil {
			return false
		}
		failed := 0
		seen = seen[:0]
		for _, m := range st.Members {
			seen = append(seen, m.ID+"="+m.Gossip)
			if m.Gossip == "failed" {
				failed++
			}
		}
		if failed != 2 {
			t.Logf("gossip on the leader: %v", seen)
		}
		return failed == 2
	})
	// Several reconcile rounds and dead-server timeouts pass.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := len(c.Voters()); got != 3 {
			t.Fatalf("leader removed a voter while gossip alone was cut: %d voters", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Heal()
}

func TestWrongSecretIsRefused(t *testing.T) {
	c := New(t, Options{})
	i := c.AddNodeWith(func(cfg *node.Config) { cfg.Secret = []byte("not the cluster secret at all!") })
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, j := range []int{0, 1, 2} {
			st, err := c.Node(j).ClusterStatus(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range st.Members {
				if m.ID == c.Members[i].ID && m.Gossip == "alive" {
					t.Fatalf("node with the wrong secret is alive in %s's gossip", c.Members[j].ID)
				}
			}
		}
		if c.Node(i).Consensus().HasState() {
			t.Fatal("node with the wrong secret received the Raft log")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Kill(i)
	if got := len(c.Voters()); got != 3 {
		t.Fatalf("voters = %d", got)
	}
}

func TestMinorityFailsWithNoQuorum(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.ProposeTimeout = 1500 * time.Millisecond }})
	l := c.Leader()
	others := c.CutOff(l)
	cmd, _ := state.Encode(state.AddDomain{Time: time.Now().UnixNano(), Name: "lost.test"})
	start := time.Now()
	_, err := c.Node(l).Consensus().Propose(context.Background(), cmd)
	if !errors.Is(err, consensus.ErrNoQuorum) {
		t.Fatalf("propose on the minority: %v", err)
	}
	t.Logf("no-quorum error after %v", time.Since(start))
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	nl := c.LeaderAmong(others)
	addDomain(t, c.Node(nl), "majority.test")
	c.Heal()
	res := addDomain(t, c.Node(nl), "healed.test")
	c.WaitApplied(res.Index)
	for _, i := range c.Running() {
		if hasDomain(c.Node(i), "lost.test") {
			t.Fatalf("%s applied a proposal that failed with no quorum", c.Members[i].ID)
		}
	}
}

func TestGracefulLeave(t *testing.T) {
	c := New(t, Options{Nodes: 4})
	l := c.Leader()
	// The leader leaves: it hands leadership over first. An election on a
	// loaded machine can make the removal fail with no quorum for a while;
	// leaving again is safe (removing a removed node changes nothing).
	deadline := time.Now().Add(RetryWindow)
	for {
		err := c.Node(l).Leave(context.Background())
		if err == nil {
			break
		}
		if !errors.Is(err, consensus.ErrNoQuorum) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("leave: %v (leaving again)", err)
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-c.Members[l].Node.Done():
	case <-time.After(Timeout):
		t.Fatal("node did not stop after leaving")
	}
	c.Members[l].Node = nil
	c.WaitForVoters(3)
	if slices.Contains(c.Voters(), c.Members[l].ID) {
		t.Fatal("left node still in the configuration")
	}
	addDomain(t, c.Node(c.Leader()), "after-leave.test")
}

func TestHTTPEndpoints(t *testing.T) {
	c := New(t, Options{})
	n := c.Node(c.Follower())
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	c.WaitFor("readyz", func() bool { code, _ := get("/readyz", ""); return code == 200 })
	// Gossip may hold a member suspect for a moment on a loaded machine:
	// the gauge follows it, so wait for it rather than read it once.
	c.WaitFor("metrics showing 3 members alive", func() bool {
		_, body := get("/metrics", "")
		return strings.Contains(body, "mailcluster_members_alive 3")
	})
	code, body := get("/metrics", "")
	for _, want := range []string{"mailcluster_raft_term", "mailcluster_raft_applied_index"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q (status %d)", want, code)
		}
	}
	if code, _ := get("/api/status", ""); code != 401 {
		t.Fatalf("status without token: %d", code)
	}
	if code, _ := get("/api/status", "wrong"); code != 401 {
		t.Fatalf("status with wrong token: %d", code)
	}
	// The status names the leader once there is one: on a loaded machine an
	// election may be running at any moment, and then it rightly says "".
	c.WaitFor("/api/status to name a leader", func() bool {
		code, body = get("/api/status", "test-admin-token")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		return strings.Contains(body, `"leader": "node`)
	})
}

// adminWrite sends an admin API write that must succeed with want. On a
// loaded machine an election can refuse it for a while (503); it is sent
// again then, and a 409 after a 503 means an attempt of unknown outcome
// created it (every write this is used for creates a named thing).
func adminWrite(t *testing.T, n *node.Node, method, path, body string, want int) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	refused := false
	for {
		code, resp := adminCall(t, n, method, path, body)
		switch {
		case code == want, code == http.StatusConflict && refused:
			return
		case code == http.StatusServiceUnavailable && time.Now().Before(deadline):
			refused = true
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("%s %s through %s: %d %s", method, path, n.ID(), code, resp)
		}
	}
}

// adminRead sends an admin API read to a node that reaches the majority:
// it may answer 503 during an election, and is asked again then.
func adminRead(t *testing.T, n *node.Node, path string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		code, body := adminCall(t, n, "GET", path, "")
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, body
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminCall sends one admin API request to node n and returns the status
// and body.
func adminCall(t *testing.T, n *node.Node, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-admin-token")
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An admin listing through any node shows what was just added through
// another, even on a node that is still catching up; a node cut off from
// the majority says it cannot answer instead of showing a stale list.
func TestAdminReadsAreConsistentOnEveryNode(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.ProposeTimeout = 1500 * time.Millisecond }})
	leader := c.Leader()
	adminWrite(t, c.Node(leader), "POST", "/api/domains", `{"name":"example.test"}`, http.StatusCreated)
	lagging := c.Follower()
	others := c.CutOff(lagging)
	if code, body := adminCall(t, c.Node(lagging), "GET", "/api/users?domain=example.test", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("user list on the cut-off node: %d %s, want 503", code, body)
	}
	leader = c.LeaderAmong(others)
	for i := range 20 {
		req := fmt.Sprintf(`{"address":"user%d@example.test","password":"a long enough password"}`, i)
		adminWrite(t, c.Node(leader), "POST", "/api/users", req, http.StatusCreated)
	}
	c.Heal()
	c.Leader() // the healed node follows again; it may still trail the log
	code, body := adminRead(t, c.Node(lagging), "/api/users?domain=example.test")
	if code != http.StatusOK {
		t.Fatalf("user list on the healed node: %d %s", code, body)
	}
	for i := range 20 {
		if !strings.Contains(body, fmt.Sprintf(`"user%d@example.test"`, i)) {
			t.Fatalf("the healed node's list lacks user%d@example.test: %s", i, body)
		}
	}
	if code, body := adminRead(t, c.Node(lagging), "/api/users/user19@example.test"); code != http.StatusOK {
		t.Fatalf("user show on the healed node: %d %s", code, body)
	}
}

// A leave repeated after the first one's removal committed but its answer
// was lost must succeed: the removed node no longer hears from any leader,
// so it finds one through the other servers.
func TestLeaveAgainAfterTheRemovalCommitted(t *testing.T) {
	c := New(t, Options{Nodes: 4})
	f := c.Follower()
	id := c.Members[f].ID
	Retry(t, "remove "+id+" through the leader", func() error { return c.Node(c.Leader()).Consensus().RemoveServer(id) })
	c.WaitForVoters(3)
	// The removed node stops hearing heartbeats: let it notice.
	time.Sleep(2 * time.Second)
	if err := c.Node(f).Leave(context.Background()); err != nil {
		t.Fatalf("leave after the removal committed: %v", err)
	}
	select {
	case <-c.Members[f].Node.Done():
	case <-time.After(Timeout):
		t.Fatal("node did not stop after leaving")
	}
	c.Members[f].Node = nil
	if slices.Contains(c.Voters(), id) {
		t.Fatal("left node back in the configuration")
	}
}
