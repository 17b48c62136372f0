package dispatch

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/replication/state"
)

func TestParseRetry(t *testing.T) {
	got, err := ParseRetry(" 30s, 2m,1h ")
	if err != nil || !slices.Equal(got, []time.Duration{30 * time.Second, 2 * time.Minute, time.Hour}) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", ",", "5m,-1s", "soon"} {
		if _, err := ParseRetry(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// Every member gets a share of the work, the same one on every node, and
// a member leaving moves only its own share.
func TestOwnerSpreadsAndIsStable(t *testing.T) {
	members := []string{"node1", "node2", "node3"}
	count := map[string]int{}
	moved := 0
	for i := range 3000 {
		k := groupKey{from: "a@example.test", domain: fmt.Sprintf("d%d.test", i)}
		k.blob[0], k.blob[1] = byte(i), byte(i>>8)
		o := owner(members, k)
		if o != owner([]string{"node3", "node1", "node2"}, k) {
			t.Fatal("the owner depends on the members' order")
		}
		count[o]++
		if o2 := owner([]string{"node1", "node2"}, k); o != "node3" && o2 != o {
			moved++
		}
	}
	for _, m := range members {
		if count[m] < 800 {
			t.Fatalf("shares %v", count)
		}
	}
	if moved != 0 {
		t.Fatalf("%d groups of live members moved when node3 left", moved)
	}
}

func TestWantsDSN(t *testing.T) {
	cases := []struct {
		from   string
		notify uint8
		kind   string
		want   bool
	}{
		{"a@x", 0, state.BounceFailed, true},
		{"a@x", 0, state.BounceDelayed, true},
		{"a@x", 0, state.BounceDelivered, false},
		{"", 0, state.BounceFailed, false}, // never to the null sender
		{"a@x", state.NotifyNever, state.BounceFailed, false},
		{"a@x", state.NotifyFailure, state.BounceDelayed, false},
		{"a@x", state.NotifyFailure | state.NotifyDelay, state.BounceDelayed, true},
		{"a@x", state.NotifySuccess, state.BounceFailed, false},
	}
	for _, c := range cases {
		e := state.QueueEntry{From: c.from, Notify: c.notify}
		if got := wantsDSN(&e, c.kind); got != c.want {
			t.Errorf("from %q notify %d %s: %v", c.from, c.notify, c.kind, got)
		}
	}
}

// The fencing check refuses once the last accepted renewal is older than
// the lease less the margin, and at once when a renewal lost an entry.
func TestLeaseKeeperCheck(t *testing.T) {
	w := &Worker{cfg: Config{Lease: 10 * time.Second}}
	k := newLeaseKeeper(w, 7, []state.QueueID{{Index: 1}}, time.Now(), func() {})
	if err := k.check(); err != nil {
		t.Fatalf("fresh lease: %v", err)
	}
	if m := k.margin(); m != 2*time.Second {
		t.Fatalf("margin %v", m)
	}
	k.lastOK = time.Now().Add(-8 * time.Second)
	if err := k.check(); err != errLeaseExpired {
		t.Fatalf("renewed 8 s ago with a 10 s lease: %v", err)
	}
	k.lastOK = time.Now()
	k.lost = true
	if err := k.check(); err != errLeaseLost {
		t.Fatalf("lost: %v", err)
	}
	short := &Worker{cfg: Config{Lease: 600 * time.Millisecond}}
	if m := newLeaseKeeper(short, 1, nil, time.Now(), func() {}).margin(); m != 200*time.Millisecond {
		t.Fatalf("margin of a short lease %v", m)
	}
}
