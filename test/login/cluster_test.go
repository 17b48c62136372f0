package login_test

import (
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// Guesses spread over three nodes (and three protocols) hit the block at
// the same total as on one node: before, each node counted only its own,
// so three nodes allowed three times the guesses.
func TestFailedLoginBlockHoldsOnEveryNode(t *testing.T) {
	const limit = 6
	c := newCluster(t, 3, auth.LimiterOptions{IPFailures: limit, FailDelay: time.Millisecond, Block: time.Hour}, nil)
	guess := func(k int) {
		i := k % 3
		p := protocols[k%len(protocols)]
		o, l := p.login(t, c.Node(i).Endpoint(p.endpoint), user, "wrong password")
		if o != wrong {
			t.Fatalf("guess %d on node %d over %s: %s (%q), want a wrong-password reply", k+1, i, p.name, o, l)
		}
	}
	// peerFailures waits until every node heard of every guess made on the
	// others (gossip is asynchronous), so the counts below are exact.
	heard := func(guesses int) {
		for i := range 3 {
			own := 0
			for k := range guesses {
				if k%3 == i {
					own++
				}
			}
			cluster.WaitFor(t, "gossiped failures on node "+string(rune('1'+i)), wait, func() bool {
				return int(metric(t, c.Node(i), "mailcluster_auth_peer_failures_total")) >= guesses-own
			})
		}
	}
	for k := range limit - 1 {
		guess(k)
	}
	heard(limit - 1)
	for i := range 3 {
		if b := metric(t, c.Node(i), "mailcluster_auth_blocked_addresses"); b != 0 {
			t.Fatalf("node %d blocks the address after %d failures, before the limit of %d", i, limit-1, limit)
		}
	}
	guess(limit - 1)
	for i := range 3 {
		cluster.WaitFor(t, "block on node "+string(rune('1'+i)), wait, func() bool {
			return metric(t, c.Node(i), "mailcluster_auth_blocked_addresses") == 1
		})
		for _, p := range protocols {
			if o, l := p.login(t, c.Node(i).Endpoint(p.endpoint), user, password); o != throttled {
				t.Errorf("node %d, %s, right password after %d failures spread over the cluster: %s (%q), want throttled", i, p.name, limit, o, l)
			}
		}
	}
}

// A failed login whose broadcast never reached a node (UDP is lossy on a
// loaded machine; here gossip to that node is cut while it is sent) still
// reaches it through the next push/pull exchange, and is counted once.
func TestLostFailureGossipIsRepaired(t *testing.T) {
	c := newCluster(t, 3, auth.LimiterOptions{IPFailures: 100, FailDelay: time.Millisecond, Block: time.Hour}, nil)
	c.PartitionGossip([]int{0, 1}, []int{2})
	p := protocols[0]
	if o, l := p.login(t, c.Node(0).Endpoint(p.endpoint), user, "wrong password"); o != wrong {
		t.Fatalf("guess: %s (%q)", o, l)
	}
	peer := func(i int) float64 { return metric(t, c.Node(i), "mailcluster_auth_peer_failures_total") }
	cluster.WaitFor(t, "node 2 hearing the failure", wait, func() bool { return peer(1) == 1 })
	// Long past the broadcast's few retransmissions (gossip every 20 ms).
	time.Sleep(time.Second)
	if n := peer(2); n != 0 {
		t.Fatalf("node 3 heard the failure through a cut link (%v): the test cannot show a repair", n)
	}
	c.Heal()
	cluster.WaitFor(t, "node 3 hearing the failure after the heal", wait, func() bool { return peer(2) == 1 })
	// Later exchanges carry it again; it stays counted once.
	time.Sleep(3 * time.Second)
	for i := 1; i < 3; i++ {
		if n := peer(i); n != 1 {
			t.Fatalf("node %d counted the failure %v times", i+1, n)
		}
	}
}
