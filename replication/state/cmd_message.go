package state

import (
	"bytes"
	"encoding/binary"
	"math"
)

// uidExhausted reports whether n more UIDs do not fit: UIDNEXT must stay
// representable, so the last usable UID is 2^32-2.
func uidExhausted(mb *mboxRec, n int) bool {
	return uint64(mb.uidNext)+uint64(n) > math.MaxUint32
}

func (a *applier) deliver(c *Deliver) (Result, error) {
	if c.Size < 0 || c.Blob.IsZero() || len(c.Remote) > maxQueueOrdinals {
		return nil, ErrInvalidArgument
	}
	for i := range c.Remote {
		if !validQueueTarget(&c.Remote[i]) {
			return nil, ErrInvalidArgument
		}
	}
	date, zone := internalDate(c.InternalDate, c.Time)
	res := DeliverResult{Targets: make([]TargetResult, len(c.Targets))}
	for i, t := range c.Targets {
		tr, err := a.deliverOne(c, t, date, zone)
		if err != nil {
			code := sentinelCode(err)
			if code == CodeOK {
				return nil, err
			}
			tr = TargetResult{Status: Status{Code: code}}
		}
		res.Targets[i] = tr
	}
	n := 0
	queued, err := a.enqueue(c.Blob, c.Size, c.Summary, c.Remote, &n)
	if err != nil {
		return nil, err
	}
	res.Queued = queued
	return res, nil
}

// deliverOne stores one copy; like a handler, it fails with a sentinel only
// before writing.
func (a *applier) deliverOne(c *Deliver, t DeliverTarget, date int64, zone int32) (TargetResult, error) {
	acct, err := a.account(t.Account)
	if err != nil {
		return TargetResult{}, err
	}
	if acct.Disabled {
		return TargetResult{}, ErrAccountDisabled
	}
	id, ok := uint64(0), false
	if t.Mailbox != "" {
		if name, err := NormalizeMailboxName(t.Mailbox); err == nil {
			id, ok = a.mailboxID(acct.ID, name)
		}
	}
	if !ok {
		if id, ok = a.mailboxID(acct.ID, Inbox); !ok {
			return TargetResult{}, corruptIfMissing(ErrNoSuchMailbox)
		}
	}
	mb, err := a.mailbox(id)
	if err != nil {
		return TargetResult{}, corruptIfMissing(err)
	}
	u, err := a.loadUsage(acct.ID)
	if err != nil {
		return TargetResult{}, err
	}
	if !quotaAllows(&acct, &u, uint64(c.Size), 1) {
		return TargetResult{}, ErrQuotaExceeded
	}
	if uidExhausted(&mb, 1) {
		return TargetResult{}, ErrExhausted
	}
	m := msgRec{flags: t.Flags.normalize(), blob: c.Blob, size: uint64(c.Size), date: date, zone: zone}
	uid, err := a.insertMessage(&mb, acct.Address, m, c.Summary, &u)
	if err != nil {
		return TargetResult{}, err
	}
	if err := a.putMailbox(&mb); err != nil {
		return TargetResult{}, err
	}
	if err := a.putUsage(acct.ID, &u); err != nil {
		return TargetResult{}, err
	}
	return TargetResult{MailboxID: mb.id, UIDValidity: mb.uidValidity, UID: uid}, nil
}

func (a *applier) append(c *Append) (Result, error) {
	if c.Size < 0 || c.Blob.IsZero() {
		return nil, ErrInvalidArgument
	}
	acct, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	if acct.Disabled {
		return nil, ErrAccountDisabled
	}
	mb, err := a.mailbox(c.MailboxID)
	if err != nil {
		return nil, err
	}
	if mb.account != acct.ID {
		return nil, ErrNoSuchMailbox
	}
	u, err := a.loadUsage(acct.ID)
	if err != nil {
		return nil, err
	}
	if !quotaAllows(&acct, &u, uint64(c.Size), 1) {
		return nil, ErrQuotaExceeded
	}
	if uidExhausted(&mb, 1) {
		return nil, ErrExhausted
	}
	date, zone := internalDate(c.InternalDate, c.Time)
	m := msgRec{flags: c.Flags.normalize(), blob: c.Blob, size: uint64(c.Size), date: date, zone: zone}
	uid, err := a.insertMessage(&mb, acct.Address, m, c.Summary, &u)
	if err != nil {
		return nil, err
	}
	if err := a.putMailbox(&mb); err != nil {
		return nil, err
	}
	if err := a.putUsage(acct.ID, &u); err != nil {
		return nil, err
	}
	return AppendResult{MailboxID: mb.id, UIDValidity: mb.uidValidity, UID: uid}, nil
}

func (a *applier) copy(c *Copy) (Result, error) {
	return a.copyMessages(c.SourceMailbox, c.UIDs, c.DestMailbox, false)
}

func (a *applier) move(c *Move) (Result, error) {
	return a.copyMessages(c.SourceMailbox, c.UIDs, c.DestMailbox, true)
}

// copyMessages implements Copy and Move.
func (a *applier) copyMessages(srcID uint64, set UIDSet, dstID uint64, move bool) (Result, error) {
	src, err := a.mailbox(srcID)
	if err != nil {
		return nil, err
	}
	dst := &src
	if dstID != srcID {
		d, err := a.mailbox(dstID)
		if err != nil {
			return nil, err
		}
		dst = &d
	} else if move {
		return nil, ErrInvalidArgument
	}
	msgs, err := a.loadMessages(src.id, set.normalize())
	if err != nil {
		return nil, err
	}
	res := CopyResult{UIDValidity: dst.uidValidity}
	if len(msgs) == 0 {
		return res, nil
	}
	if uidExhausted(dst, len(msgs)) {
		return nil, ErrExhausted
	}
	dstAcct, err := a.accountByID(dst.account)
	if err != nil {
		return nil, err
	}
	dstUsage, err := a.loadUsage(dst.account)
	if err != nil {
		return nil, err
	}
	srcUsage := &dstUsage
	srcAddr := dstAcct.Address
	if src.account != dst.account {
		u, err := a.loadUsage(src.account)
		if err != nil {
			return nil, err
		}
		srcUsage = &u
		if srcAddr, err = a.accountAddress(src.account); err != nil {
			return nil, err
		}
	}
	if !move {
		var total uint64
		for _, m := range msgs {
			total += m.size
		}
		if !quotaAllows(&dstAcct, &dstUsage, total, uint64(len(msgs))) {
			return nil, ErrQuotaExceeded
		}
	}

	for _, m := range msgs {
		uid, err := a.insertMessage(dst, dstAcct.Address, m, nil, &dstUsage)
		if err != nil {
			return nil, err
		}
		res.Source.add(m.uid)
		res.Dest.add(uid)
	}
	if move {
		uids := make([]uint32, 0, len(msgs))
		for _, m := range msgs {
			if err := a.removeMessage(&src, m, srcUsage); err != nil {
				return nil, err
			}
			uids = append(uids, m.uid)
		}
		src.highestModSeq = a.index
		a.emit(Expunged{Index: a.index, Account: srcAddr, MailboxID: src.id, UIDs: uids, ModSeq: a.index})
	}
	if err := a.putMailbox(&src); err != nil {
		return nil, err
	}
	if dst != &src {
		if err := a.putMailbox(dst); err != nil {
			return nil, err
		}
	}
	if err := a.putUsage(dst.account, &dstUsage); err != nil {
		return nil, err
	}
	if srcUsage != &dstUsage {
		if err := a.putUsage(src.account, srcUsage); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (a *applier) setFlags(c *SetFlags) (Result, error) {
	if c.Op < FlagsAdd || c.Op > FlagsReplace {
		return nil, ErrInvalidArgument
	}
	mb, err := a.mailbox(c.MailboxID)
	if err != nil {
		return nil, err
	}
	addr, err := a.accountAddress(mb.account)
	if err != nil {
		return nil, err
	}
	msgs, err := a.loadMessages(mb.id, c.UIDs.normalize())
	if err != nil {
		return nil, err
	}
	flags := c.Flags.normalize()
	var res FlagsResult
	group := map[string]int{} // canonical flags → index in res.Changed; lookups only
	for i := range msgs {
		m := &msgs[i]
		if c.UnchangedSince != nil && m.modseq > *c.UnchangedSince {
			res.Modified.add(m.uid)
			continue
		}
		nf := c.Op.apply(m.flags, flags)
		if nf.Equal(m.flags) {
			continue
		}
		if err := a.changeFlags(&mb, m, nf); err != nil {
			return nil, err
		}
		key := nf.canonical()
		g, ok := group[key]
		if !ok {
			g = len(res.Changed)
			group[key] = g
			res.Changed = append(res.Changed, FlagGroup{Flags: nf})
		}
		res.Changed[g].UIDs.add(m.uid)
		a.emit(FlagsChanged{Index: a.index, Account: addr, MailboxID: mb.id, UID: m.uid, Flags: nf, ModSeq: a.index})
	}
	if len(res.Changed) > 0 {
		mb.highestModSeq = a.index
		res.ModSeq = a.index
		if err := a.putMailbox(&mb); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (a *applier) expunge(c *Expunge) (Result, error) {
	mb, err := a.mailbox(c.MailboxID)
	if err != nil {
		return nil, err
	}
	addr, err := a.accountAddress(mb.account)
	if err != nil {
		return nil, err
	}
	set := c.UIDs.normalize()
	var msgs []msgRec
	switch {
	case c.OnlyDeleted:
		if len(c.UIDs) == 0 {
			set = nil // all
		}
		var uids []uint32
		err = scanUIDs(a.flagIndex, flagPrefix(mb.id, IndexDeleted), set, func(uid uint32, _ []byte) error {
			uids = append(uids, uid)
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, uid := range uids {
			v := a.messages.Get(msgKey(mb.id, uid))
			if v == nil {
				return nil, corruptIfMissing(ErrNoSuchMessage)
			}
			m, err := decodeMsg(v)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		}
	case len(set) > 0:
		if msgs, err = a.loadMessages(mb.id, set); err != nil {
			return nil, err
		}
	}
	var res ExpungeResult
	if len(msgs) == 0 {
		return res, nil
	}
	u, err := a.loadUsage(mb.account)
	if err != nil {
		return nil, err
	}
	uids := make([]uint32, 0, len(msgs))
	for _, m := range msgs {
		if err := a.removeMessage(&mb, m, &u); err != nil {
			return nil, err
		}
		uids = append(uids, m.uid)
		res.UIDs.add(m.uid)
	}
	mb.highestModSeq = a.index
	res.ModSeq = a.index
	if err := a.putMailbox(&mb); err != nil {
		return nil, err
	}
	if err := a.putUsage(mb.account, &u); err != nil {
		return nil, err
	}
	a.emit(Expunged{Index: a.index, Account: addr, MailboxID: mb.id, UIDs: uids, ModSeq: a.index})
	return res, nil
}

func (a *applier) claimRecent(c *ClaimRecent) (Result, error) {
	mb, err := a.mailbox(c.MailboxID)
	if err != nil {
		return nil, err
	}
	res := RecentResult{Watermark: mb.recent, UIDNext: mb.uidNext}
	if mb.recent != mb.uidNext {
		mb.recent = mb.uidNext
		if err := a.putMailbox(&mb); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (a *applier) purgeBlobs(c *PurgeBlobs) (Result, error) {
	if c.Limit < 0 {
		return nil, ErrInvalidArgument
	}
	var keys [][]byte
	cur := a.blobZero.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		if len(k) != 40 {
			return nil, errCorrupt
		}
		if int64(binary.BigEndian.Uint64(k)) >= c.Before || (c.Limit > 0 && len(keys) == c.Limit) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	var res PurgeResult
	for _, k := range keys {
		var id BlobID
		copy(id[:], k[8:])
		v := a.blobs.Get(id[:])
		if v == nil {
			return nil, errCorrupt
		}
		rec, err := decodeBlob(v)
		if err != nil {
			return nil, err
		}
		if rec.refs != 0 {
			return nil, errCorrupt
		}
		for _, del := range []struct {
			b   interface{ Delete([]byte) error }
			key []byte
		}{{a.blobs, id[:]}, {a.summaries, id[:]}, {a.blobZero, k}} {
			if err := del.b.Delete(del.key); err != nil {
				return nil, err
			}
		}
		res.Blobs = append(res.Blobs, id)
	}
	if len(res.Blobs) > 0 {
		a.emit(BlobsPurged{Index: a.index, Blobs: res.Blobs})
	}
	return res, nil
}
