package imap

import (
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/mailcluster/mailcluster/replication/state"
)

// mailboxModel is the server side of one mailbox: what the state machine
// holds, and the events it emits.
type mailboxModel struct {
	index   uint64
	nextUID uint32
	flags   map[uint32]state.Flags
}

func (m *mailboxModel) uids() []uint32 {
	out := make([]uint32, 0, len(m.flags))
	for uid := range m.flags {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// clientModel is what an IMAP client knows, built only from what the
// session told it.
type clientModel struct {
	uids  []uint32
	flags map[uint32]state.Flags
}

// poll runs the session's poll steps against the view and applies the
// announcements to the client, checking each is valid when it arrives.
func poll(t *rapid.T, v *mailboxView, c *clientModel, server *mailboxModel, allowExpunge bool) {
	if allowExpunge {
		for _, seq := range v.takeExpunges() {
			if seq < 1 || int(seq) > len(c.uids) {
				t.Fatalf("EXPUNGE %d with %d messages known", seq, len(c.uids))
			}
			uid := c.uids[seq-1]
			c.uids = slices.Delete(c.uids, int(seq-1), int(seq))
			delete(c.flags, uid)
		}
	}
	if added := v.takeAdded(); len(added) > 0 {
		if uint32(len(c.uids)+len(added)) != v.count() {
			t.Fatalf("EXISTS %d but the client knew %d and %d arrived", v.count(), len(c.uids), len(added))
		}
		// The client fetches the new messages' UIDs and flags.
		for _, uid := range added {
			c.uids = append(c.uids, uid)
			if f, ok := server.flags[uid]; ok {
				c.flags[uid] = f
			}
		}
	}
	for _, u := range v.takeChanged() {
		if u.seq < 1 || int(u.seq) > len(c.uids) || c.uids[u.seq-1] != u.uid {
			t.Fatalf("FETCH %d (UID %d) does not match the client's view %v", u.seq, u.uid, c.uids)
		}
		c.flags[u.uid] = u.flags
	}
}

// TestViewConverges drives a session's view with random changes by others
// and by the session itself, polling with and without expunges allowed,
// and checks that every announcement is valid when sent and that after a
// full poll the client knows exactly what the server holds.
func TestViewConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		server := &mailboxModel{nextUID: 1, flags: map[uint32]state.Flags{}}
		for range rapid.IntRange(0, 8).Draw(t, "initial") {
			server.flags[server.nextUID] = state.Flags{}
			server.nextUID++
		}
		server.index = 10
		v := newMailboxView("INBOX", server.uids(), server.index, nil)
		client := &clientModel{uids: server.uids(), flags: map[uint32]state.Flags{}}
		for uid, f := range server.flags {
			client.flags[uid] = f
		}
		var queue []state.Event // published, not yet drained
		drain := func() {
			for _, e := range queue {
				v.apply(e)
			}
			queue = nil
		}
		randomFlags := func(label string) state.Flags {
			f := state.Flags{System: state.SystemFlags(rapid.IntRange(0, 31).Draw(t, label))}
			if rapid.Bool().Draw(t, label+"kw") {
				f.Keywords = []string{"$Label1"}
			}
			return f
		}
		steps := rapid.IntRange(1, 60).Draw(t, "steps")
		for range steps {
			switch rapid.IntRange(0, 6).Draw(t, "op") {
			case 0: // another session adds messages
				server.index++
				for range rapid.IntRange(1, 3).Draw(t, "n") {
					uid := server.nextUID
					server.nextUID++
					server.flags[uid] = state.Flags{}
					queue = append(queue, state.MessageAdded{Index: server.index, UID: uid})
				}
			case 1: // another session expunges some
				uids := server.uids()
				if len(uids) == 0 {
					continue
				}
				var gone []uint32
				for _, uid := range uids {
					if rapid.Bool().Draw(t, "expunge") {
						gone = append(gone, uid)
						delete(server.flags, uid)
					}
				}
				if len(gone) > 0 {
					server.index++
					queue = append(queue, state.Expunged{Index: server.index, UIDs: gone})
				}
			case 2: // another session changes flags
				uids := server.uids()
				if len(uids) == 0 {
					continue
				}
				uid := rapid.SampledFrom(uids).Draw(t, "uid")
				server.index++
				f := randomFlags("flags")
				server.flags[uid] = f
				queue = append(queue, state.FlagsChanged{Index: server.index, UID: uid, Flags: f})
			case 3: // this session changes flags (STORE, answered at once)
				known := client.uids
				if len(known) == 0 {
					continue
				}
				uid := rapid.SampledFrom(known).Draw(t, "own uid")
				if _, alive := server.flags[uid]; !alive {
					continue // STORE on an expunged message changes nothing
				}
				server.index++
				f := randomFlags("own flags")
				server.flags[uid] = f
				queue = append(queue, state.FlagsChanged{Index: server.index, UID: uid, Flags: f})
				v.markOwn(server.index)
				if !rapid.Bool().Draw(t, "silent") {
					client.flags[uid] = f // the STORE response
				}
				// .SILENT: the client assumes what it asked for.
				client.flags[uid] = f
			case 4: // drain the feed (events reach the session)
				drain()
			case 5: // FETCH/STORE/SEARCH: updates without EXPUNGE
				drain()
				poll(t, v, client, server, false)
			case 6: // NOOP
				drain()
				poll(t, v, client, server, true)
			}
		}
		drain()
		poll(t, v, client, server, true)
		if want := server.uids(); !slices.Equal(client.uids, want) {
			t.Fatalf("client knows %v, server holds %v", client.uids, want)
		}
		for _, uid := range client.uids {
			if !client.flags[uid].Equal(server.flags[uid]) {
				t.Fatalf("UID %d: client has %v, server %v", uid, client.flags[uid], server.flags[uid])
			}
		}
	})
}

func TestViewSkipsWhatTheOpenReadShowed(t *testing.T) {
	v := newMailboxView("INBOX", []uint32{1, 2, 3}, 50, nil)
	v.apply(state.MessageAdded{Index: 49, UID: 3})
	v.apply(state.Expunged{Index: 50, UIDs: []uint32{9}})
	v.apply(state.FlagsChanged{Index: 48, UID: 2, Flags: state.Flags{System: state.FlagSeen}})
	if len(v.added) != 0 || len(v.gone) != 0 || len(v.changed) != 0 {
		t.Fatalf("events at or below the open index changed the view: %+v", v)
	}
	v.apply(state.MessageAdded{Index: 51, UID: 4})
	v.apply(state.MessageAdded{Index: 52, UID: 4}) // a repeat
	v.apply(state.Expunged{Index: 53, UIDs: []uint32{2, 4, 77}})
	if len(v.added) != 0 {
		t.Fatalf("UID 4 was expunged before it was announced, still pending: %v", v.added)
	}
	if seqs := v.takeExpunges(); !slices.Equal(seqs, []uint32{2}) {
		t.Fatalf("expunges %v, want [2]", seqs)
	}
	if !slices.Equal(v.uids, []uint32{1, 3}) {
		t.Fatalf("view %v", v.uids)
	}
}

func TestExpungeSequenceNumbersShiftDown(t *testing.T) {
	v := newMailboxView("INBOX", []uint32{10, 20, 30, 40, 50}, 1, nil)
	v.apply(state.Expunged{Index: 2, UIDs: []uint32{20, 30, 50}})
	// After "* 2 EXPUNGE" the third message becomes the second.
	if seqs := v.takeExpunges(); !slices.Equal(seqs, []uint32{2, 2, 3}) {
		t.Fatalf("got %v, want [2 2 3]", seqs)
	}
}

func TestResyncAfterOverflow(t *testing.T) {
	v := newMailboxView("INBOX", []uint32{1, 2, 3}, 10, nil)
	v.resync = true
	v.resyncWith([]uint32{1, 3, 4, 5},
		[]state.Flags{{}, {System: state.FlagSeen}, {}, {Keywords: []string{"$Work"}}},
		[]uint64{5, 12, 13, 14}, 14)
	if seqs := v.takeExpunges(); !slices.Equal(seqs, []uint32{2}) {
		t.Fatalf("expunges %v", seqs)
	}
	if added := v.takeAdded(); !slices.Equal(added, []uint32{4, 5}) {
		t.Fatalf("added %v", added)
	}
	ch := v.takeChanged()
	if len(ch) != 1 || ch[0].uid != 3 || ch[0].seq != 2 {
		t.Fatalf("changed %+v", ch)
	}
	if !v.keywordsChanged || v.keywords["$work"] != "$Work" {
		t.Fatalf("keywords %v", v.keywords)
	}
	// An event the re-read already showed is skipped.
	v.apply(state.MessageAdded{Index: 14, UID: 5})
	if len(v.added) != 0 {
		t.Fatal("re-read event applied twice")
	}
}
