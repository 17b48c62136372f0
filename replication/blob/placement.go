package blob

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Member is one node as the blob layer sees it.
type Member struct {
	ID   string // stable node ID
	Zone string // failure domain; "" is a zone like any other
	Addr string // address of the node's blob channel, for Link.Dial
}

// Placement returns the r members that should hold id, best first:
// rendezvous (highest random weight) hashing, so every node computes the same
// answer from the same member set, and a member leaving moves only the blobs
// it held (each to one new member). Distinct zones are preferred: first the
// best-scoring member of as many zones as possible, then the best remaining
// members. r is capped at the number of distinct members.
func Placement(id ID, members []Member, r int) []Member {
	ranked := rank(id, members)
	if r > len(ranked) {
		r = len(ranked)
	}
	if r <= 0 {
		return nil
	}
	out := make([]Member, 0, r)
	taken := make([]bool, len(ranked))
	zones := make(map[string]bool)
	for i, m := range ranked {
		if len(out) == r {
			break
		}
		if !zones[m.Zone] {
			zones[m.Zone] = true
			taken[i] = true
			out = append(out, m)
		}
	}
	for i, m := range ranked {
		if len(out) == r {
			break
		}
		if !taken[i] {
			out = append(out, m)
		}
	}
	return out
}

// rank orders distinct members (by ID) by their rendezvous score for id.
func rank(id ID, members []Member) []Member {
	type scored struct {
		m     Member
		score uint64
	}
	all := make([]scored, 0, len(members))
	seen := make(map[string]bool, len(members))
	buf := make([]byte, 0, len(id)+64)
	for _, m := range members {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		all = append(all, scored{m: m, score: weight(buf, id, m.ID)})
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.m.ID, b.m.ID)
	})
	out := make([]Member, len(all))
	for i := range all {
		out[i] = all[i].m
	}
	return out
}

// weight is the rendezvous score: the first 8 bytes of SHA-256(id ‖ memberID).
// It must never change: every node has to agree on it, across versions.
func weight(buf []byte, id ID, memberID string) uint64 {
	buf = append(append(buf[:0], id[:]...), memberID...)
	sum := sha256.Sum256(buf)
	return binary.BigEndian.Uint64(sum[:8])
}
