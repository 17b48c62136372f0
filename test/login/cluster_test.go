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
