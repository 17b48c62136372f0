package imap

import (
	"errors"
	"math"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// selected is the state of a selected mailbox.
type selected struct {
	id          uint64
	uidValidity uint32
	readOnly    bool
	sub         *replication.Subscription
	view        *mailboxView
	// recent: the UIDs that are \Recent in this session (RFC 3501): those
	// this read-write session claimed first, or, read-only, those nobody
	// claimed yet. Empty for IMAP4rev2 clients.
	recent state.UIDSet
	// ownAdded: UIDs this session appended or copied into the mailbox
	// itself; arriving alone they do not need a \Recent claim.
	ownAdded map[uint32]struct{}
	// searchRes is the last SEARCH ... RETURN (SAVE) result ("$").
	searchRes imap.UIDSet
}

var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	cmd := "SELECT"
	if options != nil && options.ReadOnly {
		cmd = "EXAMINE"
	}
	s.pendingUnselect = "" // the Unselect before was part of this SELECT
	var data *imap.SelectData
	err := s.run(cmd, func() (err error) {
		data, err = s.selectMailbox(name, cmd == "EXAMINE")
		return err
	})
	return data, err
}

func (s *session) selectMailbox(name string, readOnly bool) (*imap.SelectData, error) {
	s.unselect()
	norm, err := state.NormalizeMailboxName(name)
	if err != nil {
		return nil, errNoMailbox
	}
	// SelectMailbox passes the read barrier (DESIGN.md §1.4) and
	// subscribes to the mailbox's changes before it reads it.
	opened, err := s.store.SelectMailbox(s.ctx, s.account, norm, replication.SelectOptions{
		Children: s.rev2(), // IMAP4rev2 SELECT answers with a LIST
	})
	if err != nil {
		return nil, s.fail(err)
	}
	mb := opened.Mailbox
	keywords := map[string]string{}
	for _, k := range opened.Keywords {
		if validAtom(k) {
			keywords[strings.ToLower(k)] = k
		}
	}
	sel := &selected{
		id:          mb.ID,
		uidValidity: mb.UIDValidity,
		readOnly:    readOnly,
		sub:         opened.Changes,
		view:        newMailboxView(mb.Name, opened.UIDs, mb.HighestModSeq, keywords),
		ownAdded:    map[uint32]struct{}{},
	}
	if !s.rev2() {
		switch {
		case readOnly:
			if mb.RecentWatermark < mb.UIDNext {
				sel.recent = state.UIDSet{{Start: mb.RecentWatermark, Stop: math.MaxUint32 - 1}}
			}
		case mb.RecentWatermark < mb.UIDNext:
			sel.recent = s.claimRecent(sel, nil)
		}
	}
	s.sel = sel

	data := &imap.SelectData{
		Flags:          sel.flagList(),
		PermanentFlags: []imap.Flag{},
		NumMessages:    sel.view.count(),
		UIDNext:        imap.UID(mb.UIDNext),
		UIDValidity:    mb.UIDValidity,
		NumRecent:      sel.countRecent(),
	}
	if !readOnly {
		data.PermanentFlags = append(sel.flagList(), imap.FlagWildcard)
	}
	if opened.FirstUnseen != 0 {
		if seq, ok := sel.view.seqOf(opened.FirstUnseen); ok {
			data.FirstUnseenSeqNum = seq
		}
	}
	if s.rev2() {
		data.List = &imap.ListData{Attrs: s.mailboxAttrs(mb, opened.HasChildren), Delim: separator, Mailbox: mb.Name}
	}
	return data, nil
}

// claimRecent claims the mailbox's unclaimed messages for this session and
// returns sel.recent grown by them. A failure (no quorum) only means fewer
// \Recent flags.
func (s *session) claimRecent(sel *selected, recent state.UIDSet) state.UIDSet {
	res, err := s.store.ClaimRecent(s.ctx, s.account, sel.id)
	if err != nil {
		s.log.Debug("could not claim \\Recent messages", "err", err)
		return recent
	}
	if res.Watermark < res.UIDNext {
		recent = append(recent, state.UIDRange{Start: res.Watermark, Stop: res.UIDNext - 1})
	}
	return recent
}

func (sel *selected) isRecent(uid uint32) bool { return sel.recent.Contains(uid) }

// countRecent is the number of messages in the client's view that are
// \Recent here.
func (sel *selected) countRecent() uint32 {
	var n int
	for _, r := range sel.recent {
		lo, _ := slices.BinarySearch(sel.view.uids, r.Start)
		hi, found := slices.BinarySearch(sel.view.uids, r.Stop)
		if found {
			hi++
		}
		n += max(0, hi-lo)
	}
	return uint32(n)
}

// flagList is the FLAGS response: system flags and the keywords in use.
func (sel *selected) flagList() []imap.Flag {
	out := slices.Clone(systemFlags)
	for _, k := range sel.view.keywordList() {
		out = append(out, imap.Flag(k))
	}
	return out
}

// Unselect ends the selected state: for UNSELECT, for CLOSE (after a silent
// Expunge) and inside a SELECT while another mailbox is selected. Only the
// first two are commands; which one it was shows in the next call (Poll
// follows a command, Select follows the implicit one), so counting waits.
func (s *session) Unselect() error {
	cmd := "UNSELECT"
	if s.closing {
		cmd = "CLOSE"
	}
	return s.guard(cmd, func() error {
		s.unselect()
		s.pendingUnselect = cmd
		return nil
	})
}

// countUnselect counts a finished UNSELECT or CLOSE command.
func (s *session) countUnselect() {
	if s.pendingUnselect != "" {
		s.srv.m.command(s.pendingUnselect, nil, 0)
		s.pendingUnselect = ""
	}
}

func (s *session) unselect() {
	s.closing = false
	if s.sel != nil {
		s.sel.sub.Close()
		s.sel = nil
	}
}

// --- updates -----------------------------------------------------------------

// Poll is called by imapserver after most commands: it tells the client what
// changed. EXPUNGE responses only when allowExpunge (not after FETCH, STORE,
// SEARCH).
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	s.countUnselect()
	return s.guard("poll", func() error { return s.poll(w, allowExpunge) })
}

func (s *session) poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.ended {
		return errSessionEnded
	}
	if err := s.watchAccount(); err != nil {
		return err
	}
	if s.sel == nil {
		return nil
	}
	if err := s.drain(); err != nil {
		// An error returned from Poll ends the connection without a reply
		// (imapserver treats it as a broken connection). Only a session
		// that said BYE ends; a failed re-read is retried next time.
		if errors.Is(err, errSessionEnded) {
			return err
		}
		s.log.Warn("imap: could not bring the selected mailbox up to date; will retry", "err", err)
		return nil
	}
	sel := s.sel
	if allowExpunge {
		if err := s.flushExpunges(w.WriteExpunge); err != nil {
			return err
		}
	}
	if added := sel.view.takeAdded(); len(added) > 0 {
		if err := w.WriteNumMessages(sel.view.count()); err != nil {
			return err
		}
		if !s.rev2() {
			s.noteRecent(added)
			if err := w.WriteNumRecent(sel.countRecent()); err != nil {
				return err
			}
		}
		clear(sel.ownAdded)
	}
	if sel.view.keywordsChanged {
		sel.view.keywordsChanged = false
		if err := w.WriteMailboxFlags(sel.flagList()); err != nil {
			return err
		}
	}
	for _, u := range sel.view.takeChanged() {
		if err := w.WriteMessageFlags(u.seq, imap.UID(u.uid), s.flagsOf(u.uid, u.flags)); err != nil {
			return err
		}
	}
	return nil
}

// noteRecent decides which newly announced messages are \Recent here.
func (s *session) noteRecent(added []uint32) {
	sel := s.sel
	if sel.readOnly {
		mb, err := s.store.MailboxByID(s.ctx, s.account, sel.id)
		if err == nil && mb.RecentWatermark <= added[len(added)-1] && !sel.recent.Contains(added[len(added)-1]) {
			sel.recent = append(sel.recent, state.UIDRange{Start: max(mb.RecentWatermark, added[0]), Stop: math.MaxUint32 - 1})
		}
		return
	}
	for _, uid := range added {
		if _, mine := sel.ownAdded[uid]; !mine && !sel.isRecent(uid) {
			sel.recent = s.claimRecent(sel, sel.recent)
			return
		}
	}
}

// drain moves the feed's queued events into the view; after an overflow it
// re-reads the mailbox. A deleted mailbox ends the session.
func (s *session) drain() error {
	sel := s.sel
	if sel.sub == nil {
		return nil
	}
	events, overflow := sel.sub.Next()
	if overflow {
		sel.view.resync = true
	}
	for _, e := range events {
		sel.view.apply(e)
	}
	if sel.view.resync && !sel.view.deleted {
		if err := s.resync(); err != nil {
			// The view stays marked for a re-read, retried at the next
			// command; the command that needs it gets the error.
			return err
		}
	}
	if sel.view.deleted {
		return s.bye("Selected mailbox was deleted")
	}
	return nil
}

// resync re-reads the whole mailbox after the feed lost events.
func (s *session) resync() error {
	sel := s.sel
	// Local state, no barrier: the feed lost events this node applied.
	f, err := s.store.MailboxFlags(s.ctx, s.account, sel.id)
	if errors.Is(err, state.ErrNoSuchMailbox) {
		sel.view.deleted = true
		return nil
	}
	if err != nil {
		return s.fail(err)
	}
	sel.view.resyncWith(f.UIDs, f.Flags, f.ModSeqs, f.HighestModSeq)
	return nil
}

// flushExpunges announces the messages expunged since the last time.
func (s *session) flushExpunges(write func(seq uint32) error) error {
	for _, seq := range s.sel.view.takeExpunges() {
		if err := write(seq); err != nil {
			return err
		}
	}
	return nil
}

// flagsOf is a message's FLAGS as this session shows them.
func (s *session) flagsOf(uid uint32, f state.Flags) []imap.Flag {
	names := f.Strings()
	out := make([]imap.Flag, 0, len(names)+1)
	for _, n := range names {
		if n[0] == '\\' || validAtom(n) {
			out = append(out, imap.Flag(n))
		}
	}
	if s.sel != nil && s.sel.isRecent(uid) && !s.rev2() {
		out = append(out, imap.Flag(`\Recent`))
	}
	return out
}

// Idle streams updates until the client sends DONE.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	return s.run("IDLE", func() error {
		s.srv.m.idle.Inc()
		defer s.srv.m.idle.Dec()
		for {
			if err := s.poll(w, true); err != nil {
				return err
			}
			var mailbox, account <-chan struct{}
			if s.sel != nil {
				mailbox = s.sel.sub.Ready()
			}
			if s.acctSub != nil {
				account = s.acctSub.Ready()
			}
			select {
			case <-stop:
				return nil
			case <-s.ctx.Done():
				return nil
			case <-mailbox:
			case <-account:
			}
		}
	})
}

// announceKeywords sends "* FLAGS" before a FETCH that shows f, if f holds
// a keyword the client has not been told of: a client must never see a
// keyword in FETCH that FLAGS has not listed. (Poll sends FLAGS too, but
// only after the command's own FETCH responses.) It writes between two of
// imapserver's responses, through the connection's guard.
func (s *session) announceKeywords(f state.Flags) error {
	v := s.sel.view
	v.noteKeywords(f)
	if !v.keywordsChanged || s.wire == nil {
		return nil
	}
	v.keywordsChanged = false
	names := make([]string, 0, len(systemFlags)+len(v.keywords))
	for _, fl := range s.sel.flagList() {
		names = append(names, string(fl))
	}
	return s.wire.writeUntagged("FLAGS (" + strings.Join(names, " ") + ")")
}
