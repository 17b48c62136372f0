package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

type fakeOutside struct{ arr Arrivals }

func (f fakeOutside) Arrivals(context.Context) (Arrivals, error) { return f.arr, nil }

// TestCheckOutside: the outside check finds every way the sink can disagree
// with the ledger — an acknowledged recipient that never arrived, a refused
// one that did, a copy not ending with the bytes sent, a message nobody
// sent — and counts a duplicate near a fault without calling it a
// violation, but calls one with no fault near it one.
func TestCheckOutside(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := NewLedger("chaos-test")
	u := account{Address: "user1@" + Domain, Password: "pw"}
	t0 := time.Now()
	r := &runner{ledger: l, faults: []FaultRecord{{Kind: KillLeader, Node: 0, At: t0, End: t0.Add(5 * time.Second)}}}

	n := 0
	send := func(local bool, o Outcome) (*Message, outgoing) {
		n++
		out := newOutsideMessage(rng, l.nextID(), u, fmt.Sprintf("r%d@outside1.test", n), local, 800)
		m := l.add(out, false)
		l.attempt(m, Attempt{Outcome: o, Reply: "451 4.3.0 try again"})
		if o == OutcomeRefused {
			l.giveUp(m)
		}
		return m, out
	}
	arrive := func(arr *Arrivals, out outgoing, at time.Time, data []byte) {
		arr.Messages = append(arr.Messages, Arrival{N: len(arr.Messages) + 1, To: []string{out.Outside}, Received: at,
			Data: append([]byte("DKIM-Signature: v=1; a=ed25519-sha256; d=chaos.test\r\n"), data...)})
	}
	var arr Arrivals
	_, fine := send(true, OutcomeAcked)
	arrive(&arr, fine, t0.Add(-time.Minute), fine.Data)
	send(false, OutcomeAcked) // lost
	_, refused := send(false, OutcomeRefused)
	arrive(&arr, refused, t0.Add(-time.Minute), refused.Data)
	_, dupFault := send(false, OutcomeAcked)
	arrive(&arr, dupFault, t0.Add(-time.Second), dupFault.Data) // the 250 came in just before the kill
	arrive(&arr, dupFault, t0.Add(15*time.Second), dupFault.Data)
	_, dupNoFault := send(true, OutcomeAcked)
	arrive(&arr, dupNoFault, t0.Add(-10*time.Minute), dupNoFault.Data)
	arrive(&arr, dupNoFault, t0.Add(-9*time.Minute), dupNoFault.Data)
	_, altered := send(false, OutcomeAcked)
	bad := slices.Clone(altered.Data)
	bad[len(bad)-3] ^= 1
	arrive(&arr, altered, t0.Add(-time.Minute), bad)
	send(false, OutcomeUnknown) // may arrive or not
	stranger := newOutsideMessage(rng, "someone-else@elsewhere.test", u, "x@outside2.test", false, 500)
	arrive(&arr, stranger, t0, stranger.Data)

	res := r.checkOutside(context.Background(), fakeOutside{arr}, 0, 0)
	if res.Sent != 7 || res.Acked != 5 || res.Maybe != 1 || res.Refused != 1 || res.Mixed != 2 {
		t.Errorf("counts: %+v", res)
	}
	if res.Arrived != 4 || res.Lost != 1 || res.Phantom != 1 || res.Unexpected != 1 {
		t.Errorf("arrived %d lost %d phantom %d unexpected %d; want 4 1 1 1", res.Arrived, res.Lost, res.Phantom, res.Unexpected)
	}
	if res.Duplicates != 2 || res.DuplicatesNoFault != 1 {
		t.Errorf("duplicates %d (no fault near %d); want 2 (1)", res.Duplicates, res.DuplicatesNoFault)
	}
	kinds := map[string]int{}
	for _, v := range l.Violations() {
		kinds[v.Kind]++
	}
	want := map[string]int{VOutsideLost: 1, VPhantom: 1, VOutsideDup: 1, VOutsideAltered: 1, VUnexpected: 1}
	if !maps.Equal(kinds, want) {
		t.Errorf("violations %v; want %v", kinds, want)
	}
}
