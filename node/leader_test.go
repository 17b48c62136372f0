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

// waitLeaderWorkOn waits until exactly member i runs the leader tasks.
func waitLeaderWorkOn(t *testing.T, c *cluster.Cluster, i int) {
	t.Helper()
	want := c.Members[i].ID + "=dkim-keys,purge,queue-clock,reconcile"
	var last []string
	cluster.WaitFor(t, "leader tasks on "+c.Members[i].ID+" only", cluster.Timeout, func() bool {
		last = leaderWork(t, c)
		return len(last) == 1 && last[0] == want
	})
}

// The cluster-wide work (reconcile, purge) runs on the leader alone and
// follows leadership: after a transfer and after the leader is killed, the
// new leader runs it and the old one does not. Reconcile really moved:
// the new leader adds a node that joins afterwards.
func TestLeaderTasksFollowLeadership(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	first := c.Leader()
	waitLeaderWorkOn(t, c, first)

	if err := c.Node(first).Consensus().TransferLeadership(); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	var second int
	cluster.WaitFor(t, "a new leader after the transfer", cluster.Timeout, func() bool {
		second = c.Leader()
		return second != first
	})
	waitLeaderWorkOn(t, c, second)

	c.Kill(second)
	third := c.Leader()
	waitLeaderWorkOn(t, c, third)

	added := c.AddNode()
	id := c.Members[added].ID
	cluster.WaitFor(t, fmt.Sprintf("%s added as a voter by the new leader", id), cluster.Timeout, func() bool {
		return slices.Contains(c.Voters(), id)
	})
	waitLeaderWorkOn(t, c, third)
}

// A leader cut off from the others loses leadership without stopping, and
// its leader tasks stop with it: only the majority's new leader runs them.
func TestLeaderTasksStopWhenLeadershipIsLost(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	old := c.Leader()
	waitLeaderWorkOn(t, c, old)
	majority := c.CutOff(old)
	next := c.LeaderAmong(majority)
	waitLeaderWorkOn(t, c, next)
	c.Heal()
	c.WaitFor("one leader again", func() bool { return c.Leader() >= 0 })
	waitLeaderWorkOn(t, c, c.Leader())
}
