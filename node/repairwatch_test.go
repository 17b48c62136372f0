package node

import (
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
)

// A repair pass is kicked exactly when this node may have missed bodies.
func TestRepairWatch(t *testing.T) {
	// "In contact" means heard from within two heartbeats; a heartbeat of a
	// minute and a lost contact an hour ago keep a slow machine from
	// blurring the two.
	const hb = time.Minute
	now := time.Now()
	follower := func(leader string, contact time.Time) consensus.Status {
		return consensus.Status{ID: "n1", LeaderID: leader, LastContact: contact}
	}
	steps := []struct {
		what string
		st   consensus.Status
		kick bool
	}{
		{"start: a leader appears", follower("n2", now), true},
		{"steady", follower("n2", now), false},
		{"cut off: no leader", follower("", now.Add(-time.Hour)), false},
		{"back with the same leader", follower("n2", now), true},
		{"steady again", follower("n2", now), false},
		{"contact lost, leader still named", follower("n2", now.Add(-time.Hour)), false},
		{"contact regained", follower("n2", now), true},
		{"a new leader", follower("n3", now), true},
		{"this node leads", consensus.Status{ID: "n1", LeaderID: "n1"}, true},
		{"still leads", consensus.Status{ID: "n1", LeaderID: "n1"}, false},
	}
	var w repairWatch
	for _, s := range steps {
		if got := w.changed(s.st, hb); got != s.kick {
			t.Errorf("%s: kick = %v, want %v", s.what, got, s.kick)
		}
	}
}
