package imap

import (
	"slices"
	"sort"
	"strings"

	"github.com/mailcluster/mailcluster/replication/state"
)

// mailboxView is one session's picture of its selected mailbox: the UIDs
// its client knows, in order (sequence number i is uids[i-1]), and the
// changes from the feed that the client has not been told about yet.
//
// It is plain data, used by one goroutine at a time, and never panics on
// odd input: events may repeat what the view already holds (the session's
// own writes, a re-read after an overflow) or name messages it never knew.
type mailboxView struct {
	uids []uint32 // announced messages, ascending
	// gone: announced, since expunged, EXPUNGE not sent yet. They keep
	// their sequence numbers until then and answer as expunged.
	gone map[uint32]struct{}
	// added: arrived since, EXISTS not sent yet; ascending, all above uids.
	added []uint32
	// changed: new flags to announce with an unsolicited FETCH, by UID.
	changed map[uint32]state.Flags
	// through: the read that built the view showed every change up to this
	// Raft index; events at or below it are skipped. (Not raised by events:
	// one command's events share an index.)
	through uint64
	// applied: the highest index of an event applied since.
	applied uint64
	// own: indexes of flag changes this session made and already answered.
	own []uint64
	// keywords seen in the mailbox (lower case → spelling) for FLAGS.
	keywords        map[string]string
	keywordsChanged bool
	deleted         bool   // the mailbox is gone
	name            string // its current name (renames keep the ID)
	resync          bool   // the feed overflowed: re-read the mailbox
}

func newMailboxView(name string, uids []uint32, through uint64, keywords map[string]string) *mailboxView {
	if keywords == nil {
		keywords = map[string]string{}
	}
	return &mailboxView{
		uids:     uids,
		gone:     map[uint32]struct{}{},
		changed:  map[uint32]state.Flags{},
		through:  through,
		keywords: keywords,
		name:     name,
	}
}

// count is the number of messages the client believes exist.
func (v *mailboxView) count() uint32 { return uint32(len(v.uids)) }

// lastUID is the highest UID the view knows of, announced or not.
func (v *mailboxView) lastUID() uint32 {
	if n := len(v.added); n > 0 {
		return v.added[n-1]
	}
	if n := len(v.uids); n > 0 {
		return v.uids[n-1]
	}
	return 0
}

// lastAnnouncedUID is the UID "*" stands for in the client's UID sets.
func (v *mailboxView) lastAnnouncedUID() uint32 {
	if n := len(v.uids); n > 0 {
		return v.uids[n-1]
	}
	return 0
}

// seqOf returns uid's sequence number in the client's view.
func (v *mailboxView) seqOf(uid uint32) (uint32, bool) {
	i, ok := slices.BinarySearch(v.uids, uid)
	if !ok {
		return 0, false
	}
	return uint32(i + 1), true
}

func (v *mailboxView) isGone(uid uint32) bool {
	_, ok := v.gone[uid]
	return ok
}

// markOwn records the Raft index of a flag change this session made and
// answered itself, so the feed does not echo it.
func (v *mailboxView) markOwn(index uint64) {
	if index == 0 {
		return
	}
	if n := len(v.own); n == 0 || v.own[n-1] < index {
		v.own = append(v.own, index)
	}
}

func (v *mailboxView) isOwn(index uint64) bool {
	// Events come in index order: older own indexes can be forgotten.
	for len(v.own) > 0 && v.own[0] < index {
		v.own = v.own[1:]
	}
	return len(v.own) > 0 && v.own[0] == index
}

// noteKeywords adds keywords of f to the mailbox's list.
func (v *mailboxView) noteKeywords(f state.Flags) {
	for _, k := range f.Keywords {
		low := strings.ToLower(k)
		if _, ok := v.keywords[low]; !ok && validAtom(k) {
			v.keywords[low] = k
			v.keywordsChanged = true
		}
	}
}

// keywordList is the mailbox's keywords in a stable order.
func (v *mailboxView) keywordList() []string {
	out := make([]string, 0, len(v.keywords))
	for _, k := range v.keywords {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// apply records one event of this mailbox.
func (v *mailboxView) apply(e state.Event) {
	switch e.(type) {
	case state.MessageAdded, state.FlagsChanged, state.Expunged:
		defer func() { v.applied = max(v.applied, e.EventIndex()) }()
	}
	switch e := e.(type) {
	case state.MessageAdded:
		if e.Index <= v.through {
			return
		}
		v.noteKeywords(e.Flags)
		if e.UID > v.lastUID() {
			v.added = append(v.added, e.UID)
		}
	case state.FlagsChanged:
		if e.Index <= v.through {
			return
		}
		v.noteKeywords(e.Flags)
		if _, announced := v.seqOf(e.UID); !announced || v.isGone(e.UID) {
			return // unknown to the client, or on its way out
		}
		if v.isOwn(e.Index) {
			// The client got this session's own answer, which already
			// showed these flags. An older change of someone else still
			// pending for the message is superseded: send the newest.
			if _, pending := v.changed[e.UID]; pending {
				v.changed[e.UID] = e.Flags
			}
			return
		}
		v.changed[e.UID] = e.Flags
	case state.Expunged:
		if e.Index <= v.through {
			return
		}
		for _, uid := range e.UIDs {
			if i, ok := slices.BinarySearch(v.added, uid); ok {
				v.added = slices.Delete(v.added, i, i+1)
				continue
			}
			if _, ok := v.seqOf(uid); ok {
				v.gone[uid] = struct{}{}
				delete(v.changed, uid)
			}
		}
	case state.MailboxRenamed:
		v.name = e.NewName
	case state.MailboxDeleted:
		v.deleted = true
	}
}

// takeExpunges removes the gone messages from the view and returns the
// sequence numbers to announce, in order: each one as it is after the
// EXPUNGEs before it (so "3, 3" removes the third message twice).
func (v *mailboxView) takeExpunges() []uint32 {
	if len(v.gone) == 0 {
		return nil
	}
	seqs := make([]uint32, 0, len(v.gone))
	kept := v.uids[:0]
	for i, uid := range v.uids {
		if _, ok := v.gone[uid]; ok {
			seqs = append(seqs, uint32(i+1-len(seqs)))
			continue
		}
		kept = append(kept, uid)
	}
	v.uids = kept
	clear(v.gone)
	return seqs
}

// takeAdded appends the arrived messages to the view and returns them.
func (v *mailboxView) takeAdded() []uint32 {
	added := v.added
	v.uids = append(v.uids, added...)
	v.added = nil
	return added
}

// flagUpdate is an unsolicited FETCH (FLAGS) to send.
type flagUpdate struct {
	seq, uid uint32
	flags    state.Flags
}

// takeChanged returns the pending flag changes of messages still in the
// view, in sequence order.
func (v *mailboxView) takeChanged() []flagUpdate {
	if len(v.changed) == 0 {
		return nil
	}
	out := make([]flagUpdate, 0, len(v.changed))
	for uid, f := range v.changed {
		if seq, ok := v.seqOf(uid); ok && !v.isGone(uid) {
			out = append(out, flagUpdate{seq: seq, uid: uid, flags: f})
		}
	}
	clear(v.changed)
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// resyncWith replaces the pending changes with the difference between the
// view and a fresh read of the mailbox: current holds every message's UID
// and flags and modseqs their MODSEQ, ascending; through is the mailbox's
// HIGHESTMODSEQ in that read.
func (v *mailboxView) resyncWith(current []uint32, flags []state.Flags, modseqs []uint64, through uint64) {
	last := v.lastAnnouncedUID()
	known := max(v.through, v.applied)
	clear(v.changed)
	v.added = v.added[:0]
	for i, uid := range current {
		v.noteKeywords(flags[i])
		if uid > last {
			v.added = append(v.added, uid)
			continue
		}
		if modseqs[i] > known && !v.isGone(uid) {
			if _, ok := v.seqOf(uid); ok {
				v.changed[uid] = flags[i]
			}
		}
	}
	for _, uid := range v.uids {
		if _, ok := slices.BinarySearch(current, uid); !ok {
			v.gone[uid] = struct{}{}
		}
	}
	v.through = max(v.through, through)
	v.own = nil
	v.resync = false
}

// validAtom reports whether s can be sent as a flag keyword (atom chars).
func validAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			return false
		}
		switch c {
		case '(', ')', '{', '%', '*', '"', '\\', ']':
			return false
		}
	}
	return true
}
