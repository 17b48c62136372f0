package blob

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func testID(i int) ID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return Sum(b[:])
}

func members(zones ...string) []Member {
	out := make([]Member, len(zones))
	for i, z := range zones {
		out[i] = Member{ID: fmt.Sprintf("node%d", i), Zone: z, Addr: fmt.Sprintf("10.0.0.%d:7000", i)}
	}
	return out
}

func ids(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestPlacementIsDeterministic(t *testing.T) {
	ms := members("a", "a", "b", "b", "c", "")
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 500; i++ {
		id := testID(i)
		want := ids(Placement(id, ms, 3))
		shuffled := slices.Clone(ms)
		r.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if got := ids(Placement(id, shuffled, 3)); !slices.Equal(got, want) {
			t.Fatalf("placement depends on member order: %v vs %v", got, want)
		}
	}
}

func TestPlacementSizes(t *testing.T) {
	ms := members("", "", "")
	id := testID(1)
	if got := Placement(id, ms, 5); len(got) != 3 {
		t.Errorf("r above member count: %d members, want 3", len(got))
	}
	if got := Placement(id, ms, 0); got != nil {
		t.Errorf("r=0: %v", got)
	}
	if got := Placement(id, nil, 3); got != nil {
		t.Errorf("no members: %v", got)
	}
	dup := append(slices.Clone(ms), ms[0])
	if got := Placement(id, dup, 4); len(got) != 3 {
		t.Errorf("duplicate member counted twice: %v", ids(got))
	}
}

func TestPlacementSpreadsZones(t *testing.T) {
	ms := members("a", "a", "a", "b", "b", "c")
	for i := 0; i < 2000; i++ {
		pl := Placement(testID(i), ms, 3)
		zones := map[string]bool{}
		for _, m := range pl {
			zones[m.Zone] = true
		}
		if len(zones) != 3 {
			t.Fatalf("blob %d placed in zones %v, want all three", i, zones)
		}
	}
	// Fewer zones than replicas: every zone is used, then the rest filled.
	ms = members("a", "a", "a", "b")
	for i := 0; i < 2000; i++ {
		pl := Placement(testID(i), ms, 3)
		if len(pl) != 3 || !slices.ContainsFunc(pl, func(m Member) bool { return m.Zone == "b" }) {
			t.Fatalf("blob %d placed on %v, want zone b included", i, ids(pl))
		}
	}
}

func TestPlacementIsBalanced(t *testing.T) {
	ms := members("", "", "", "", "")
	count := map[string]int{}
	const n, r = 5000, 3
	for i := 0; i < n; i++ {
		for _, m := range Placement(testID(i), ms, r) {
			count[m.ID]++
		}
	}
	expected := float64(n*r) / float64(len(ms))
	for id, c := range count {
		if f := float64(c) / expected; f < 0.9 || f > 1.1 {
			t.Errorf("%s holds %d copies, expected about %.0f", id, c, expected)
		}
	}
}

// When a member leaves, only the blobs it held move, each to one new member;
// when one joins, each blob gains at most the newcomer.
func TestPlacementMovesMinimally(t *testing.T) {
	layouts := map[string][]Member{
		"one zone":     members("", "", "", "", "", ""),
		"three zones":  members("a", "a", "b", "b", "c", "c"),
		"uneven zones": members("a", "a", "a", "a", "b", "c"),
		"two zones":    members("a", "a", "a", "b", "b"),
	}
	for name, ms := range layouts {
		t.Run(name, func(t *testing.T) {
			for leave := range ms {
				rest := slices.Delete(slices.Clone(ms), leave, leave+1)
				gone := ms[leave].ID
				moved := 0
				for i := 0; i < 1000; i++ {
					id := testID(i)
					before := ids(Placement(id, ms, 3))
					after := ids(Placement(id, rest, 3))
					lost := 0
					for _, m := range before {
						if !slices.Contains(after, m) {
							lost++
							if m != gone {
								t.Fatalf("blob %d: %s lost its copy although %s left (%v -> %v)", i, m, gone, before, after)
							}
						}
					}
					if lost > 0 {
						moved++
					}
					if !slices.Contains(before, gone) && !slices.Equal(before, after) {
						t.Fatalf("blob %d not on %s but moved: %v -> %v", i, gone, before, after)
					}
				}
				if moved == 0 {
					t.Fatalf("no blob was on %s at all", gone)
				}
				// A member joining is the same movement read backwards.
			}
		})
	}
}
