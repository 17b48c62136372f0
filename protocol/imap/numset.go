package imap

import (
	"fmt"
	"slices"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/replication/state"
)

// target is one message a command names, as the client knows it.
type target struct {
	seq, uid uint32
	gone     bool // expunged elsewhere, EXPUNGE not yet sent
}

// maxSetRanges bounds how many ranges one sequence set may hold, so a
// hostile set cannot make a command quadratic.
const maxSetRanges = 10000

// resolve turns a sequence or UID set (or "$") into the messages of the
// client's view it names, in sequence order. Sequence numbers beyond the
// view are a client error; UIDs that do not exist are skipped (RFC 3501).
// byUID reports whether the client addressed messages by UID.
func (s *session) resolve(numSet imap.NumSet) (targets []target, byUID bool, err error) {
	// Take in what the feed has so far (without telling the client yet), so
	// messages expunged elsewhere are known as gone.
	if err := s.drain(); err != nil {
		return nil, false, err
	}
	v := s.sel.view
	if imap.IsSearchRes(numSet) {
		numSet = s.sel.searchRes
	}
	var spans []span // index ranges into v.uids
	switch set := numSet.(type) {
	case imap.SeqSet:
		if len(set) > maxSetRanges {
			return nil, false, bad("Sequence set has too many ranges")
		}
		n := uint32(len(v.uids))
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = n
			}
			if stop == 0 {
				stop = n
			}
			if start > stop {
				start, stop = stop, start
			}
			if start == 0 {
				continue // "*" in an empty mailbox
			}
			if stop > n {
				return nil, false, bad(fmt.Sprintf("No message with sequence number %d (the mailbox has %d)", stop, n))
			}
			spans = append(spans, span{int(start - 1), int(stop)})
		}
	case imap.UIDSet:
		byUID = true
		if len(set) > maxSetRanges {
			return nil, true, bad("UID set has too many ranges")
		}
		last := v.lastAnnouncedUID()
		for _, r := range set {
			start, stop := uint32(r.Start), uint32(r.Stop)
			if start == 0 {
				start = last
			}
			if stop == 0 {
				stop = last
			}
			if start > stop {
				start, stop = stop, start
			}
			if stop == 0 {
				continue
			}
			lo, _ := slices.BinarySearch(v.uids, start)
			hi, found := slices.BinarySearch(v.uids, stop)
			if found {
				hi++
			}
			if lo < hi {
				spans = append(spans, span{lo, hi})
			}
		}
	case nil:
	default:
		return nil, false, bad("Unsupported message set")
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo - b.lo })
	next := 0 // first index not emitted yet: merges overlapping spans
	for _, sp := range spans {
		for j := max(sp.lo, next); j < sp.hi; j++ {
			uid := v.uids[j]
			targets = append(targets, target{seq: uint32(j + 1), uid: uid, gone: v.isGone(uid)})
		}
		next = max(next, sp.hi)
	}
	return targets, byUID, nil
}

// span is the half-open index range [lo, hi) of the view.
type span struct{ lo, hi int }

// uidSetOf is the set of the live targets' UIDs, and whether any target was
// gone.
func uidSetOf(targets []target) (set state.UIDSet, anyGone bool) {
	for _, t := range targets {
		if t.gone {
			anyGone = true
			continue
		}
		if n := len(set); n > 0 && set[n-1].Stop+1 == t.uid {
			set[n-1].Stop = t.uid
			continue
		}
		set = append(set, state.UIDRange{Start: t.uid, Stop: t.uid})
	}
	return set, anyGone
}

// toIMAPUIDSet converts a store UID set.
func toIMAPUIDSet(set state.UIDSet) imap.UIDSet {
	out := make(imap.UIDSet, 0, len(set))
	for _, r := range set {
		out = append(out, imap.UIDRange{Start: imap.UID(r.Start), Stop: imap.UID(r.Stop)})
	}
	return out
}
