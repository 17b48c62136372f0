package imap

import (
	"errors"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// --- STORE ---------------------------------------------------------------------

func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	return s.run(numCommand("STORE", numSet), func() error { return s.storeFlags(w, numSet, flags) })
}

func (s *session) storeFlags(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags) error {
	if s.sel == nil {
		return errSelectedGone
	}
	if s.sel.readOnly {
		return errReadOnly
	}
	targets, byUID, err := s.resolve(numSet)
	if err != nil {
		return err
	}
	set, anyGone := uidSetOf(targets)
	var op state.FlagOp
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = state.FlagsAdd
	case imap.StoreFlagsDel:
		op = state.FlagsRemove
	default:
		op = state.FlagsReplace
	}
	names := make([]string, len(flags.Flags))
	for i, f := range flags.Flags {
		names[i] = string(f)
	}
	if len(set) > 0 {
		res, err := s.store.SetFlags(s.ctx, s.account, s.sel.id, replication.FlagChange{UIDs: set, Op: op, Flags: names})
		if err != nil {
			return s.fail(err)
		}
		s.sel.view.markOwn(res.ModSeq)
		if op != state.FlagsRemove {
			s.sel.view.noteKeywords(state.ParseFlags(names))
		}
	}
	// Read the flags back: the session sees its own write at once, and
	// messages expunged meanwhile show up as missing.
	live := targets[:0:0]
	for _, t := range targets {
		if !t.gone {
			live = append(live, t)
		}
	}
	for start := 0; start < len(live) && len(set) > 0; start += fetchChunk {
		chunk := live[start:min(len(live), start+fetchChunk)]
		msgs, err := s.load(chunk, false)
		if err != nil {
			return s.fail(err)
		}
		for i, t := range chunk {
			if msgs[i].missing {
				anyGone = true
				continue
			}
			if flags.Silent {
				continue
			}
			if err := s.announceKeywords(msgs[i].rec.Flags); err != nil {
				return s.brokenWrite(err)
			}
			rw := w.CreateMessage(t.seq)
			if byUID {
				rw.WriteUID(imap.UID(t.uid))
			}
			rw.WriteFlags(s.flagsOf(t.uid, msgs[i].rec.Flags))
			if err := rw.Close(); err != nil {
				return s.brokenWrite(err)
			}
		}
	}
	if anyGone && !byUID {
		return errExpungeSeen
	}
	return nil
}

// --- COPY and MOVE ---------------------------------------------------------------

func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	var data *imap.CopyData
	err := s.run(numCommand("COPY", numSet), func() (err error) {
		data, err = s.copyOrMove(numSet, dest, nil)
		return err
	})
	return data, err
}

func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	return s.run(numCommand("MOVE", numSet), func() error {
		_, err := s.copyOrMove(numSet, dest, w)
		return err
	})
}

// copyOrMove copies (mw nil) or moves messages by reference: no body is
// copied. The destination must exist ([TRYCREATE]) and have room in the
// quota ([OVERQUOTA]).
func (s *session) copyOrMove(numSet imap.NumSet, dest string, mw *imapserver.MoveWriter) (*imap.CopyData, error) {
	if s.sel == nil {
		return nil, errSelectedGone
	}
	move := mw != nil
	if move && s.sel.readOnly {
		return nil, errReadOnly
	}
	targets, _, err := s.resolve(numSet)
	if err != nil {
		return nil, err
	}
	destMB, err := s.findMailbox(dest)
	if err != nil {
		if errors.Is(err, replication.ErrNoSuchMailbox) {
			return nil, errTryCreate
		}
		return nil, s.fail(err)
	}
	set, _ := uidSetOf(targets)
	if len(set) == 0 {
		return nil, nil
	}
	var res state.CopyResult
	switch {
	case move && destMB.ID == s.sel.id:
		// RFC 6851 allows it: the messages get new UIDs in the same
		// mailbox and the old ones are expunged. The store's Move refuses
		// one mailbox as both ends, so it is a copy, then an expunge of
		// exactly the copied UIDs; if that second commit fails, the client
		// is told, and finds the copies next to the originals.
		if res, err = s.store.Copy(s.ctx, s.account, s.sel.id, set, destMB.ID); err == nil && len(res.Source) > 0 {
			if _, err = s.store.Expunge(s.ctx, s.account, s.sel.id, res.Source, false); err != nil {
				s.log.Warn("MOVE into the selected mailbox copied but could not expunge the originals", "err", err)
			}
		}
	case move:
		res, err = s.store.Move(s.ctx, s.account, s.sel.id, set, destMB.ID)
	default:
		res, err = s.store.Copy(s.ctx, s.account, s.sel.id, set, destMB.ID)
	}
	if err != nil {
		return nil, s.fail(err)
	}
	if len(res.Source) == 0 {
		return nil, nil // everything was expunged meanwhile
	}
	s.train(move, destMB, res)
	if destMB.ID == s.sel.id {
		for _, uid := range res.Dest.UIDs() {
			s.sel.ownAdded[uid] = struct{}{}
		}
	}
	data := &imap.CopyData{
		UIDValidity: res.UIDValidity,
		SourceUIDs:  toIMAPUIDSet(res.Source),
		DestUIDs:    toIMAPUIDSet(res.Dest),
	}
	if !move {
		return data, nil
	}
	if err := mw.WriteCopyData(data); err != nil {
		return nil, err
	}
	// The move's own expunges are already in the feed: announce them now
	// (others' too, which MOVE allows).
	if err := s.drain(); err != nil {
		return nil, err
	}
	return nil, s.flushExpunges(mw.WriteExpunge)
}

// findMailbox looks a mailbox up by name; if this node does not know it
// yet, it waits for a read barrier and looks again (it may have been created
// a moment ago through another node).
func (s *session) findMailbox(name string) (state.Mailbox, error) {
	norm, err := state.NormalizeMailboxName(name)
	if err != nil {
		return state.Mailbox{}, replication.ErrNoSuchMailbox
	}
	mb, err := s.store.Mailbox(s.ctx, s.account, norm)
	if errors.Is(err, replication.ErrNoSuchMailbox) {
		if berr := s.store.Barrier(s.ctx); berr == nil {
			mb, err = s.store.Mailbox(s.ctx, s.account, norm)
		}
	}
	return mb, err
}

// --- EXPUNGE ---------------------------------------------------------------------

func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	// CLOSE calls Expunge with a writer that writes nothing, then Unselect.
	silent := *w == imapserver.ExpungeWriter{}
	name := "EXPUNGE"
	switch {
	case silent:
		s.closing = true
		name = "CLOSE"
	case uids != nil:
		name = "UID EXPUNGE"
	}
	if silent {
		// Counted with the Unselect that follows, unless this fails.
		return s.guard(name, func() error {
			err := s.expunge(w, uids, true)
			if err != nil {
				s.closing = false
				s.srv.m.command(name, err, 0)
			}
			return err
		})
	}
	return s.run(name, func() error { return s.expunge(w, uids, false) })
}

func (s *session) expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet, silent bool) error {
	if s.sel == nil {
		return errSelectedGone
	}
	if s.sel.readOnly {
		if silent {
			return nil // CLOSE after EXAMINE removes nothing
		}
		return errReadOnly
	}
	// Only messages the client knows: up to the last UID it was told about.
	last := s.sel.view.lastAnnouncedUID()
	if last == 0 {
		return nil
	}
	set := state.UIDSet{{Start: 1, Stop: last}}
	if uids != nil {
		u := *uids
		if imap.IsSearchRes(u) {
			u = s.sel.searchRes
		}
		set = set[:0]
		for _, r := range u {
			start, stop := uint32(r.Start), uint32(r.Stop)
			if start == 0 {
				start = last
			}
			if stop == 0 {
				stop = last
			}
			start, stop = min(start, stop), min(max(start, stop), last)
			if start <= stop {
				set = append(set, state.UIDRange{Start: start, Stop: stop})
			}
		}
		if len(set) == 0 {
			return nil
		}
	}
	// Nothing flagged \Deleted: no write (so CLOSE works without quorum).
	if mb, err := s.store.MailboxByID(s.ctx, s.account, s.sel.id); err == nil && mb.Deleted == 0 {
		return nil
	}
	if _, err := s.store.Expunge(s.ctx, s.account, s.sel.id, set, true); err != nil {
		return s.fail(err)
	}
	if silent {
		return nil
	}
	if err := s.drain(); err != nil {
		return err
	}
	return s.flushExpunges(w.WriteExpunge)
}

// --- APPEND ------------------------------------------------------------------------

func (s *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	var data *imap.AppendData
	err := s.run("APPEND", func() (err error) {
		data, err = s.appendMessage(mailbox, r, options)
		return err
	})
	return data, err
}

// appendMessage stores the literal durably (body on W replicas, entry
// committed) before the OK.
func (s *session) appendMessage(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	mb, err := s.findMailbox(mailbox)
	if err != nil {
		if errors.Is(err, replication.ErrNoSuchMailbox) {
			return nil, errTryCreate
		}
		return nil, s.fail(err)
	}
	flags := make([]string, 0, len(options.Flags))
	for _, f := range options.Flags {
		flags = append(flags, string(f))
	}
	// Through the delivery pipeline, like every message: it refuses early
	// what the quota cannot take (before the literal is read), runs the
	// checks, and commits.
	d, err := s.srv.cfg.Pipeline.Begin(s.ctx, delivery.Envelope{
		Source: delivery.SourceAppend, Account: s.account, Size: r.Size(), Date: options.Time,
	})
	if err != nil {
		return nil, s.fail(err)
	}
	defer d.Abort()
	if err := d.AddMailbox(s.ctx, mb.ID, flags); err != nil {
		return nil, s.fail(err)
	}
	if err := d.Body(s.ctx, &exactReader{r: r, left: r.Size()}, s.srv.opts.MaxMessageSize); err != nil {
		return nil, s.fail(err)
	}
	out, err := d.Commit(s.ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	res := out.Append
	if s.sel != nil && s.sel.id == res.MailboxID {
		s.sel.ownAdded[res.UID] = struct{}{}
	}
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}

// exactReader turns an early end of the literal (the client hung up in the
// middle) into io.ErrUnexpectedEOF. imapserver's literal reader reports a
// plain io.EOF there, which would store the truncated message.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
