package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// leaderWork asks every running member's operations API which leader
// tasks it runs, and returns the members that run any, as
// "node2=dkim-keys,purge,queue-clock,reconcile".
func leaderWork(t *testing.T, c *cluster.Cluster) []string {
	t.Helper()
	var out []string
	for _, i := range c.Running() {
		cl := &api.Client{BaseURL: "http://" + c.Node(i).HTTPAddr(), Token: "test-admin-token"}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cl.Status(ctx)
		cancel()
		if err != nil {
			continue // a node between states; the caller polls again
		}
		if len(st.LeaderTasks) > 0 {
			tasks := slices.Sorted(slices.Values(st.LeaderTasks))
			out = append(out, st.Node+"="+strings.Join(tasks, ","))
		}
	}
	return out
}

// waitLeaderWork waits until the leader tasks run on exactly one running
// member, the one that leads among members (as they see it), and returns
// it. It asks for the leader on every poll: on a loaded machine an
// election may move leadership at any moment, and the tasks must follow.
func waitLeaderWork(t *testing.T, c *cluster.Cluster, members []int) int {
	t.Helper()
	leader := -1
	var last []string
	deadline := time.Now().Add(cluster.Timeout)
	for {
		leader = c.LeaderAmong(members)
		last = leaderWork(t, c)
		if len(last) == 1 && last[0] == c.Members[leader].ID+"=dkim-keys,purge,queue-clock,reconcile" && c.LeaderAmong(members) == leader {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for the leader tasks on the leader (%s) only; they run on %q", cluster.Timeout, c.Members[leader].ID, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The cluster-wide work (reconcile, purge) runs on the leader alone and
// follows leadership: after a transfer and after the leader is killed, the
// new leader runs it and the old one does not. Reconcile really moved:
// the new leader adds a node that joins afterwards.
func TestLeaderTasksFollowLeadership(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	waitLeaderWork(t, c, c.Running())

	// Transfer leadership away. On a loaded machine a transfer can time
	// out, or an election can bring leadership back: transfer again.
	second := -1
	cluster.WaitFor(t, "leadership transferred away, and the leader tasks with it", cluster.Timeout, func() bool {
		from := c.Leader()
		if err := c.Node(from).Consensus().TransferLeadership(); err != nil {
			t.Logf("transfer leadership from %s: %v (trying again)", c.Members[from].ID, err)
			return false
		}
		second = waitLeaderWork(t, c, c.Running())
		return second != from
	})

	c.Kill(second)
	waitLeaderWork(t, c, c.Running())

	added := c.AddNode()
	id := c.Members[added].ID
	cluster.WaitFor(t, fmt.Sprintf("%s added as a voter by the new leader", id), cluster.Timeout, func() bool {
		return slices.Contains(c.Voters(), id)
	})
	waitLeaderWork(t, c, c.Running())
}

// A leader cut off from the others loses leadership without stopping, and
// its leader tasks stop with it: only the majority's new leader runs them.
func TestLeaderTasksStopWhenLeadershipIsLost(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	old := waitLeaderWork(t, c, c.Running())
	majority := c.CutOff(old)
	// The cut-off old leader is still running: leaderWork asks it too, and
	// it must run no task.
	waitLeaderWork(t, c, majority)
	c.Heal()
	c.WaitFor("one leader again", func() bool { return c.Leader() >= 0 })
	waitLeaderWork(t, c, c.Running())
}
