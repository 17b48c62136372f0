package state

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"pgregory.net/rapid"
)

// The model: a deliberately plain in-memory mail store that predicts every
// result and every stored field.

type mMsg struct {
	blob   int
	size   int64
	flags  Flags
	modseq uint64
}

type mBox struct {
	id      uint64
	acct    *mAcct
	name    string
	uv      uint32
	uidNext uint32
	recent  uint32
	hms     uint64
	use     SpecialUse
	msgs    map[uint32]*mMsg
}

func (b *mBox) uids() []uint32 {
	out := make([]uint32, 0, len(b.msgs))
	for u := range b.msgs {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

type mAcct struct {
	addr       string
	quotaBytes int64
	quotaMsgs  int64
	boxes      map[string]*mBox
	subs       map[string]bool
}

func (a *mAcct) usage() (bytes, msgs int64) {
	for _, b := range a.boxes {
		for _, m := range b.msgs {
			bytes += m.size
			msgs++
		}
	}
	return bytes, msgs
}

func (a *mAcct) allows(bytes, msgs int64) bool {
	ub, um := a.usage()
	return (a.quotaBytes == 0 || ub+bytes <= a.quotaBytes) && (a.quotaMsgs == 0 || um+msgs <= a.quotaMsgs)
}

type mBlob struct {
	refs      int
	size      int64
	zeroSince int64
}

type model struct {
	accts    map[string]*mAcct
	boxes    map[uint64]*mBox // living mailboxes
	everIDs  []uint64         // every mailbox ID ever issued
	nextMbox uint64
	lastUV   uint32
	blobs    map[int]*mBlob
	index    uint64
	now      int64

	queue     map[QueueID]*mQueue
	queueNow  int64
	queueTick uint64   // index of the last QueueTick
	tokens    []uint64 // every claim token issued
}

// mQueue is one queue entry of the model.
type mQueue struct {
	blob       int
	size       int64
	t          QueueTarget
	created    int64
	next       int64
	attempts   int
	lastReply  string
	lastHost   string
	lease      Lease
	delaySent  bool
	bounceFlag bool
}

func (m *model) refBlob(blob int, size int64) {
	bl := m.blobs[blob]
	if bl == nil {
		bl = &mBlob{size: size}
		m.blobs[blob] = bl
	}
	bl.refs++
	bl.zeroSince = 0
}

func (m *model) unrefBlob(blob int) {
	bl := m.blobs[blob]
	bl.refs--
	if bl.refs == 0 {
		bl.zeroSince = max(m.now, 0)
	}
}

func (m *model) enqueue(blob int, size int64, targets []QueueTarget, n *int) []QueueID {
	var ids []QueueID
	for _, t := range targets {
		id := QueueID{Index: m.index, N: uint16(*n)}
		*n++
		m.queue[id] = &mQueue{blob: blob, size: size, t: t, created: m.now, next: m.queueNow}
		m.refBlob(blob, size)
		ids = append(ids, id)
	}
	return ids
}

// deliverTargets predicts Deliver's local copies.
func (m *model) deliverTargets(blob int, size int64, targets []DeliverTarget) []TargetResult {
	res := make([]TargetResult, len(targets))
	for i, t := range targets {
		a := m.accts[t.Account]
		if a == nil {
			res[i] = TargetResult{Status: fail(CodeNoSuchAccount)}
			continue
		}
		b := a.boxes[Inbox]
		if t.Mailbox != "" {
			if x := a.boxes[mustNorm(t.Mailbox)]; x != nil {
				b = x
			}
		}
		if !a.allows(size, 1) {
			res[i] = TargetResult{Status: fail(CodeQuotaExceeded)}
			continue
		}
		uid := m.insert(b, blob, size, t.Flags.normalize())
		res[i] = TargetResult{MailboxID: b.id, UIDValidity: b.uv, UID: uid}
	}
	return res
}

func (m *model) held(e *mQueue) bool { return e.lease.Token != 0 && e.lease.Until > m.queueNow }

var (
	propAccounts = []string{"alice@example.org", "bob@example.org"}
	propNames    = []string{"A", "A/B", "A/B/C", "B", "C/D", "inbox", "INBOX/x", "Trash", "Sent"}
	propKeywords = []string{"$A", "$a", "$B", "Work"}
)

func blobSize(n int) int64 { return int64(10 * (n + 1)) }

// modelFrom mirrors the FSM right after setup.
func modelFrom(tb testingT, h *harness) *model {
	m := &model{accts: map[string]*mAcct{}, boxes: map[uint64]*mBox{}, blobs: map[int]*mBlob{}, queue: map[QueueID]*mQueue{}}
	h.view(func(tx *Tx) error {
		for _, addr := range propAccounts {
			a := &mAcct{addr: addr, boxes: map[string]*mBox{}, subs: map[string]bool{}}
			m.accts[addr] = a
			boxes, err := tx.Mailboxes(addr)
			if err != nil {
				return err
			}
			for _, b := range boxes {
				mb := &mBox{id: b.ID, acct: a, name: b.Name, uv: b.UIDValidity, uidNext: b.UIDNext, recent: b.RecentWatermark, hms: b.HighestModSeq, use: b.SpecialUse, msgs: map[uint32]*mMsg{}}
				a.boxes[b.Name] = mb
				m.boxes[b.ID] = mb
				m.everIDs = append(m.everIDs, b.ID)
				m.nextMbox = max(m.nextMbox, b.ID)
				m.lastUV = max(m.lastUV, b.UIDValidity)
				if b.Subscribed {
					a.subs[b.Name] = true
				}
			}
		}
		return nil
	})
	return m
}

func (m *model) newBox(a *mAcct, name string, use SpecialUse) *mBox {
	m.nextMbox++
	secs := m.now / int64(time.Second)
	uv := uint32(min(max(secs, 1), math.MaxUint32))
	if uv <= m.lastUV {
		uv = m.lastUV + 1
	}
	m.lastUV = uv
	b := &mBox{id: m.nextMbox, acct: a, name: name, uv: uv, uidNext: 1, recent: 1, hms: m.index, use: use, msgs: map[uint32]*mMsg{}}
	a.boxes[name] = b
	m.boxes[b.id] = b
	m.everIDs = append(m.everIDs, b.id)
	return b
}

func (m *model) insert(b *mBox, blob int, size int64, flags Flags) uint32 {
	uid := b.uidNext
	b.uidNext++
	b.msgs[uid] = &mMsg{blob: blob, size: size, flags: flags, modseq: m.index}
	b.hms = m.index
	m.refBlob(blob, size)
	return uid
}

func (m *model) remove(b *mBox, uid uint32) {
	msg := b.msgs[uid]
	delete(b.msgs, uid)
	m.unrefBlob(msg.blob)
}

func (m *model) missingParents(a *mAcct, name string) []string {
	var out []string
	for _, p := range parentNames(name) {
		if a.boxes[p] == nil {
			out = append(out, p)
		}
	}
	return out
}

func fail(code Code) Status { return Status{Code: code} }

func mustNorm(name string) string {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		panic(err)
	}
	return n
}

// apply predicts the result of cmd at (index, cmd time).
func (m *model) apply(cmd Command, index uint64) Result {
	m.index = index
	switch c := cmd.(type) {
	case *Deliver:
		m.now = c.Time
		for _, r := range c.Remote {
			if r.To == "" {
				return DeliverResult{Status: fail(CodeInvalidArgument)}
			}
		}
		res := DeliverResult{Targets: m.deliverTargets(blobNum(c.Blob), c.Size, c.Targets)}
		n := 0
		res.Queued = m.enqueue(blobNum(c.Blob), c.Size, c.Remote, &n)
		return res
	case *QueueTick:
		m.queueNow = max(m.queueNow, c.Time)
		m.queueTick = index
		return Done{}
	case *QueueClaim:
		m.now = c.Time
		res := ClaimResult{Token: index}
		for _, id := range c.IDs {
			e := m.queue[id]
			if e == nil || e.next > m.queueNow || m.held(e) || m.queueTick <= id.Index {
				continue
			}
			e.lease = Lease{Holder: c.Node, Token: index, Until: m.queueNow + c.Lease}
			e.attempts++
			res.Granted = append(res.Granted, id)
		}
		m.tokens = append(m.tokens, index)
		return res
	case *QueueRenew:
		m.now = c.Time
		var res RenewResult
		for _, id := range c.IDs {
			if e := m.queue[id]; e != nil && e.lease.Token == c.Token {
				e.lease.Until = m.queueNow + c.Lease
				res.Held = append(res.Held, id)
			}
		}
		return res
	case *QueueReport:
		m.now = c.Time
		res := ReportResult{Outcomes: make([]OutcomeResult, len(c.Outcomes))}
		n := 0
		for i, o := range c.Outcomes {
			e := m.queue[o.ID]
			switch {
			case e == nil:
				res.Outcomes[i].Status = fail(CodeNoSuchQueueEntry)
				continue
			case e.lease.Token != c.Token:
				res.Outcomes[i].Status = fail(CodeStaleLease)
				continue
			}
			if b := o.Bounce; b != nil {
				if len(b.Local) > 0 {
					res.Outcomes[i].Targets = m.deliverTargets(blobNum(b.Blob), b.Size, b.Local)
				}
				res.Outcomes[i].Queued = m.enqueue(blobNum(b.Blob), b.Size, b.Remote, &n)
			}
			switch o.Kind {
			case OutcomeDelivered, OutcomeFailed:
				delete(m.queue, o.ID)
				m.unrefBlob(e.blob)
			case OutcomeDeferred:
				e.lease = Lease{}
				e.next, e.lastReply, e.lastHost = o.NextAttempt, o.Reply, o.Host
				if o.Bounce != nil && o.Bounce.Kind == BounceDelayed {
					e.delaySent = true
				}
			}
		}
		return res
	case *QueueAdmin:
		m.now = c.Time
		var res QueueAdminResult
		for _, id := range c.IDs {
			e := m.queue[id]
			if e == nil {
				continue
			}
			res.Changed = append(res.Changed, id)
			if c.Op == QueueDelete {
				delete(m.queue, id)
				m.unrefBlob(e.blob)
				continue
			}
			e.next = m.queueNow
			if c.Op == QueueBounce {
				e.bounceFlag = true
			}
			if !m.held(e) {
				e.lease = Lease{}
			}
		}
		return res
	case *Append:
		m.now = c.Time
		a := m.accts[c.Account]
		b := m.boxes[c.MailboxID]
		if b == nil || b.acct != a {
			return AppendResult{Status: fail(CodeNoSuchMailbox)}
		}
		if !a.allows(c.Size, 1) {
			return AppendResult{Status: fail(CodeQuotaExceeded)}
		}
		uid := m.insert(b, blobNum(c.Blob), c.Size, c.Flags.normalize())
		return AppendResult{MailboxID: b.id, UIDValidity: b.uv, UID: uid}
	case *Copy:
		m.now = c.Time
		return m.copyMove(c.SourceMailbox, c.UIDs, c.DestMailbox, false)
	case *Move:
		m.now = c.Time
		return m.copyMove(c.SourceMailbox, c.UIDs, c.DestMailbox, true)
	case *SetFlags:
		m.now = c.Time
		b := m.boxes[c.MailboxID]
		if b == nil {
			return FlagsResult{Status: fail(CodeNoSuchMailbox)}
		}
		flags := c.Flags.normalize()
		var res FlagsResult
		group := map[string]int{}
		for _, uid := range b.uids() {
			if !c.UIDs.Contains(uid) {
				continue
			}
			msg := b.msgs[uid]
			if c.UnchangedSince != nil && msg.modseq > *c.UnchangedSince {
				res.Modified.add(uid)
				continue
			}
			nf := c.Op.apply(msg.flags, flags)
			if nf.Equal(msg.flags) {
				continue
			}
			msg.flags, msg.modseq = nf, index
			g, ok := group[nf.canonical()]
			if !ok {
				g = len(res.Changed)
				group[nf.canonical()] = g
				res.Changed = append(res.Changed, FlagGroup{Flags: nf})
			}
			res.Changed[g].UIDs.add(uid)
		}
		if len(res.Changed) > 0 {
			b.hms, res.ModSeq = index, index
		}
		return res
	case *Expunge:
		m.now = c.Time
		b := m.boxes[c.MailboxID]
		if b == nil {
			return ExpungeResult{Status: fail(CodeNoSuchMailbox)}
		}
		var res ExpungeResult
		for _, uid := range b.uids() {
			inSet := c.UIDs.Contains(uid)
			del := b.msgs[uid].flags.System&FlagDeleted != 0
			if c.OnlyDeleted && del && (len(c.UIDs) == 0 || inSet) || !c.OnlyDeleted && inSet {
				m.remove(b, uid)
				res.UIDs.add(uid)
			}
		}
		if len(res.UIDs) > 0 {
			b.hms, res.ModSeq = index, index
		}
		return res
	case *ClaimRecent:
		m.now = c.Time
		b := m.boxes[c.MailboxID]
		if b == nil {
			return RecentResult{Status: fail(CodeNoSuchMailbox)}
		}
		res := RecentResult{Watermark: b.recent, UIDNext: b.uidNext}
		b.recent = b.uidNext
		return res
	case *CreateMailbox:
		m.now = c.Time
		a := m.accts[c.Account]
		name := mustNorm(c.Name)
		if a.boxes[name] != nil {
			return MailboxResult{Status: fail(CodeMailboxExists)}
		}
		for _, p := range m.missingParents(a, name) {
			m.newBox(a, p, UseNone)
		}
		b := m.newBox(a, name, c.SpecialUse)
		if c.Subscribe {
			a.subs[name] = true
		}
		return MailboxResult{MailboxID: b.id, UIDValidity: b.uv}
	case *DeleteMailbox:
		m.now = c.Time
		a := m.accts[c.Account]
		name := mustNorm(c.Name)
		if name == Inbox {
			return Done{Status: fail(CodeCannotDeleteInbox)}
		}
		b := a.boxes[name]
		if b == nil {
			return Done{Status: fail(CodeNoSuchMailbox)}
		}
		for n := range a.boxes {
			if strings.HasPrefix(n, name+"/") {
				return Done{Status: fail(CodeHasChildren)}
			}
		}
		for _, uid := range b.uids() {
			m.remove(b, uid)
		}
		delete(a.boxes, name)
		delete(m.boxes, b.id)
		return Done{}
	case *RenameMailbox:
		m.now = c.Time
		return m.rename(m.accts[c.Account], mustNorm(c.OldName), mustNorm(c.NewName))
	case *SetSubscribed:
		m.now = c.Time
		a := m.accts[c.Account]
		if c.Subscribed {
			a.subs[mustNorm(c.Name)] = true
		} else {
			delete(a.subs, mustNorm(c.Name))
		}
		return Done{}
	case *SetQuota:
		m.now = c.Time
		a := m.accts[c.Address]
		a.quotaBytes, a.quotaMsgs = c.QuotaBytes, c.QuotaMessages
		return Done{}
	case *PurgeBlobs:
		m.now = c.Time
		var cands []int
		for n, bl := range m.blobs {
			if bl.refs == 0 && bl.zeroSince < c.Before {
				cands = append(cands, n)
			}
		}
		slices.SortFunc(cands, func(x, y int) int {
			return cmp.Or(cmp.Compare(m.blobs[x].zeroSince, m.blobs[y].zeroSince), cmp.Compare(x, y))
		})
		if c.Limit > 0 && len(cands) > c.Limit {
			cands = cands[:c.Limit]
		}
		var res PurgeResult
		for _, n := range cands {
			delete(m.blobs, n)
			res.Blobs = append(res.Blobs, blobID(n))
		}
		return res
	}
	panic(fmt.Sprintf("model: %T", cmd))
}

func (m *model) copyMove(srcID uint64, set UIDSet, dstID uint64, move bool) Result {
	src := m.boxes[srcID]
	if src == nil {
		return CopyResult{Status: fail(CodeNoSuchMailbox)}
	}
	if move && srcID == dstID {
		return CopyResult{Status: fail(CodeInvalidArgument)}
	}
	dst := m.boxes[dstID]
	if dst == nil {
		return CopyResult{Status: fail(CodeNoSuchMailbox)}
	}
	var uids []uint32
	var total int64
	for _, uid := range src.uids() {
		if set.Contains(uid) {
			uids = append(uids, uid)
			total += src.msgs[uid].size
		}
	}
	res := CopyResult{UIDValidity: dst.uv}
	if len(uids) == 0 {
		return res
	}
	if !move && !dst.acct.allows(total, int64(len(uids))) {
		return CopyResult{Status: fail(CodeQuotaExceeded)}
	}
	for _, uid := range uids {
		msg := src.msgs[uid]
		nu := m.insert(dst, msg.blob, msg.size, msg.flags)
		res.Source.add(uid)
		res.Dest.add(nu)
	}
	if move {
		for _, uid := range uids {
			m.remove(src, uid)
		}
		src.hms = m.index
	}
	return res
}

func (m *model) rename(a *mAcct, oldName, newName string) Result {
	old := a.boxes[oldName]
	if old == nil {
		return MailboxResult{Status: fail(CodeNoSuchMailbox)}
	}
	if a.boxes[newName] != nil || newName == Inbox {
		return MailboxResult{Status: fail(CodeMailboxExists)}
	}
	if oldName == Inbox {
		for _, p := range m.missingParents(a, newName) {
			m.newBox(a, p, UseNone)
		}
		nb := m.newBox(a, newName, UseNone)
		uids := old.uids()
		for _, uid := range uids {
			msg := old.msgs[uid]
			m.insert(nb, msg.blob, msg.size, msg.flags)
			m.remove(old, uid)
		}
		if len(uids) > 0 {
			old.hms = m.index
		}
		return MailboxResult{MailboxID: nb.id, UIDValidity: nb.uv}
	}
	if strings.HasPrefix(newName, oldName+"/") {
		return MailboxResult{Status: fail(CodeInvalidName)}
	}
	var children []string
	for n := range a.boxes {
		if strings.HasPrefix(n, oldName+"/") {
			children = append(children, n)
		}
	}
	slices.Sort(children)
	for _, n := range children {
		if a.boxes[newName+n[len(oldName):]] != nil {
			return MailboxResult{Status: fail(CodeMailboxExists)}
		}
	}
	for _, p := range m.missingParents(a, newName) {
		m.newBox(a, p, UseNone)
	}
	for _, from := range append([]string{oldName}, children...) {
		to := newName + from[len(oldName):]
		b := a.boxes[from]
		delete(a.boxes, from)
		b.name = to
		a.boxes[to] = b
		if a.subs[from] {
			delete(a.subs, from)
			a.subs[to] = true
		}
	}
	return MailboxResult{MailboxID: old.id, UIDValidity: old.uv}
}

func blobNum(id BlobID) int {
	var n uint64
	for _, b := range id[24:] {
		n = n<<8 | uint64(b)
	}
	return int(n) - 1
}

// propTest is one rapid run: an FSM, its model and the applied log.
type propTest struct {
	t       *rapid.T
	h       *harness
	m       *model
	pending []pendingEntry
	log     []consensus.Entry
	results [][]byte

	// History for model-independent invariants, by mailbox ID.
	seenUV   map[uint64]uint32
	uvOwner  map[uint32]uint64
	lastNext map[uint64]uint32
	lastHMS  map[uint64]uint64
	lastMods map[uint64]map[uint32]uint64 // UID → MODSEQ
}

type pendingEntry struct {
	entry consensus.Entry
	want  []byte
	cmd   Command
}

func (p *propTest) nextIndex() uint64 { return p.h.index + uint64(len(p.pending)) + 1 }

// propose predicts cmd's result and queues it for the next batch.
func (p *propTest) propose(cmd Command, timeSkew bool) {
	idx := p.nextIndex()
	now := p.h.now + int64(len(p.pending)+1)*int64(time.Second)
	tm := now
	if timeSkew {
		tm = now - int64(rapid.IntRange(0, 3*86400).Draw(p.t, "skew"))*int64(time.Second)
	}
	setTime(cmd, tm)
	want, err := encodeResult(p.m.apply(cmd, idx))
	if err != nil {
		p.t.Fatal(err)
	}
	data, err := Encode(cmd)
	if err != nil {
		p.t.Fatal(err)
	}
	p.pending = append(p.pending, pendingEntry{entry: consensus.Entry{Index: idx, Term: 3, ID: proposalID(idx), Data: data}, want: want, cmd: cmd})
}

func setTime(cmd Command, tm int64) {
	switch c := cmd.(type) {
	case *Deliver:
		c.Time = tm
	case *Append:
		c.Time = tm
	case *Copy:
		c.Time = tm
	case *Move:
		c.Time = tm
	case *SetFlags:
		c.Time = tm
	case *Expunge:
		c.Time = tm
	case *ClaimRecent:
		c.Time = tm
	case *CreateMailbox:
		c.Time = tm
	case *DeleteMailbox:
		c.Time = tm
	case *RenameMailbox:
		c.Time = tm
	case *SetSubscribed:
		c.Time = tm
	case *SetQuota:
		c.Time = tm
	case *PurgeBlobs:
		c.Time = tm
	case *QueueClaim:
		c.Time = tm
	case *QueueRenew:
		c.Time = tm
	case *QueueReport:
		c.Time = tm
	case *QueueAdmin:
		c.Time = tm
	}
	// QueueTick's Time is the tick itself: the action sets it.
}

func (p *propTest) flush() {
	if len(p.pending) == 0 {
		return
	}
	entries := make([]consensus.Entry, len(p.pending))
	for i, pe := range p.pending {
		entries[i] = pe.entry
	}
	p.h.takeEvents()
	got, err := p.h.f.Apply(entries)
	if err != nil {
		p.t.Fatal(err)
	}
	for i, pe := range p.pending {
		if !bytes.Equal(got[i], pe.want) {
			p.t.Fatalf("entry %d %T %+v:\n got %s\nwant %s", pe.entry.Index, pe.cmd, pe.cmd, got[i], pe.want)
		}
	}
	last := entries[len(entries)-1].Index
	prev := uint64(0)
	for _, e := range p.h.takeEvents() {
		if e.EventIndex() < prev || e.EventIndex() < entries[0].Index || e.EventIndex() > last {
			p.t.Fatalf("event %#v out of order or outside the batch %d..%d", e, entries[0].Index, last)
		}
		prev = e.EventIndex()
	}
	p.h.index = last
	p.h.now += int64(len(entries)) * int64(time.Second)
	p.log = append(p.log, entries...)
	p.results = append(p.results, got...)
	p.pending = nil
}

func (p *propTest) drawAccount(label string) string {
	return rapid.SampledFrom(propAccounts).Draw(p.t, label)
}

// drawMailboxID prefers mailboxes with messages, but also picks empty,
// deleted and never-existing ones.
func (p *propTest) drawMailboxID(label string) uint64 {
	var full, living []uint64
	for _, id := range p.m.everIDs {
		if b := p.m.boxes[id]; b != nil {
			living = append(living, id)
			if len(b.msgs) > 0 {
				full = append(full, id)
			}
		}
	}
	switch k := rapid.IntRange(0, 19).Draw(p.t, label+"-kind"); {
	case k < 12 && len(full) > 0:
		return rapid.SampledFrom(full).Draw(p.t, label)
	case k < 17:
		return rapid.SampledFrom(living).Draw(p.t, label)
	default:
		return rapid.SampledFrom(append(slices.Clone(p.m.everIDs), 9999)).Draw(p.t, label)
	}
}

// drawRemote draws outside recipients (at least one if need).
func (p *propTest) drawRemote(label string, need bool) []QueueTarget {
	lo := 0
	if need {
		lo = 1
	}
	var out []QueueTarget
	for i := range rapid.IntRange(lo, 2).Draw(p.t, label+"-n") {
		out = append(out, QueueTarget{From: "alice@example.org", To: rapid.SampledFrom([]string{"x@remote.test", "y@remote.test"}).Draw(p.t, fmt.Sprint(label, "-to", i)),
			Notify: uint8(rapid.IntRange(0, 15).Draw(p.t, fmt.Sprint(label, "-notify", i))), Expires: p.h.now + 86400*int64(time.Second)})
	}
	return out
}

// drawQueueIDs picks queue entries of the model (some perhaps gone or
// never made).
func (p *propTest) drawQueueIDs(label string) []QueueID {
	var known []QueueID
	for id := range p.m.queue {
		known = append(known, id)
	}
	slices.SortFunc(known, func(a, b QueueID) int { return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.N, b.N)) })
	known = append(known, QueueID{Index: 1, N: 0}, QueueID{Index: p.h.index, N: 7})
	return rapid.SliceOfN(rapid.SampledFrom(known), 1, 3).Draw(p.t, label)
}

// drawHeld mostly picks a token that holds entries of the model (leased,
// running or run out), with those entries; 0 when it does not.
func (p *propTest) drawHeld(label string) (uint64, []QueueID) {
	byToken := map[uint64][]QueueID{}
	var tokens []uint64
	for id, e := range p.m.queue {
		if e.lease.Token != 0 {
			if byToken[e.lease.Token] == nil {
				tokens = append(tokens, e.lease.Token)
			}
			byToken[e.lease.Token] = append(byToken[e.lease.Token], id)
		}
	}
	if len(tokens) == 0 || rapid.IntRange(0, 3).Draw(p.t, label+"-skip") == 0 {
		return 0, nil
	}
	slices.Sort(tokens)
	tok := rapid.SampledFrom(tokens).Draw(p.t, label)
	ids := byToken[tok]
	slices.SortFunc(ids, func(a, b QueueID) int { return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.N, b.N)) })
	return tok, ids
}

// drawToken picks a claim token issued so far (mostly the latest), or one
// never issued.
func (p *propTest) drawToken(label string) uint64 {
	if len(p.m.tokens) == 0 || rapid.IntRange(0, 9).Draw(p.t, label+"-bogus") == 0 {
		return p.h.index + 1000
	}
	if rapid.Bool().Draw(p.t, label+"-latest") {
		return p.m.tokens[len(p.m.tokens)-1]
	}
	return rapid.SampledFrom(p.m.tokens).Draw(p.t, label)
}

func (p *propTest) drawFlags(label string) Flags {
	f := Flags{System: SystemFlags(rapid.IntRange(0, 31).Draw(p.t, label+"-sys"))}
	for _, k := range rapid.SliceOfN(rapid.SampledFrom(propKeywords), 0, 3).Draw(p.t, label+"-kw") {
		f.Keywords = append(f.Keywords, k)
	}
	return f
}

func (p *propTest) drawUIDSet(label string) UIDSet {
	if rapid.IntRange(0, 9).Draw(p.t, label+"-all") == 0 {
		return UIDSet{{1, math.MaxUint32}}
	}
	n := rapid.IntRange(1, 3).Draw(p.t, label+"-n")
	var s UIDSet
	for i := range n {
		start := uint32(rapid.IntRange(1, 14).Draw(p.t, fmt.Sprintf("%s-start%d", label, i)))
		s = append(s, UIDRange{start, start + uint32(rapid.IntRange(0, 4).Draw(p.t, fmt.Sprintf("%s-len%d", label, i)))})
	}
	return s
}

func (p *propTest) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"deliver": func(t *rapid.T) {
			n := rapid.IntRange(0, 7).Draw(t, "blob")
			c := &Deliver{Blob: blobID(n), Size: blobSize(n), Summary: []byte(fmt.Sprint("summary ", n))}
			for i := range rapid.IntRange(0, 3).Draw(t, "targets") {
				acct := rapid.SampledFrom([]string{propAccounts[0], propAccounts[0], propAccounts[1], "nobody@example.org"}).Draw(t, "acct")
				box := rapid.SampledFrom(append(propNames, "")).Draw(t, "box")
				c.Targets = append(c.Targets, DeliverTarget{Account: acct, Mailbox: box, Flags: p.drawFlags(fmt.Sprint("flags", i))})
			}
			c.Remote = p.drawRemote("remote", len(c.Targets) == 0)
			p.propose(c, false)
		},
		"append": func(t *rapid.T) {
			n := rapid.IntRange(0, 7).Draw(t, "blob")
			p.propose(&Append{Account: p.drawAccount("acct"), MailboxID: p.drawMailboxID("box"), Blob: blobID(n), Size: blobSize(n), Flags: p.drawFlags("flags")}, false)
		},
		"copy": func(t *rapid.T) {
			c := &Copy{SourceMailbox: p.drawMailboxID("src"), UIDs: p.drawUIDSet("uids"), DestMailbox: p.drawMailboxID("dst")}
			p.propose(c, false)
		},
		"move": func(t *rapid.T) {
			c := &Move{SourceMailbox: p.drawMailboxID("src"), UIDs: p.drawUIDSet("uids"), DestMailbox: p.drawMailboxID("dst")}
			p.propose(c, false)
		},
		"setflags": func(t *rapid.T) {
			c := &SetFlags{MailboxID: p.drawMailboxID("box"), UIDs: p.drawUIDSet("uids"), Op: FlagOp(rapid.IntRange(1, 3).Draw(t, "op")), Flags: p.drawFlags("flags")}
			if rapid.Bool().Draw(t, "condstore") {
				since := p.h.index - uint64(rapid.IntRange(0, 5).Draw(t, "since"))
				c.UnchangedSince = &since
			}
			p.propose(c, false)
		},
		"expunge": func(t *rapid.T) {
			c := &Expunge{MailboxID: p.drawMailboxID("box"), OnlyDeleted: rapid.Bool().Draw(t, "onlydeleted")}
			if rapid.Bool().Draw(t, "withset") {
				c.UIDs = p.drawUIDSet("uids")
			}
			p.propose(c, false)
		},
		"claimrecent": func(t *rapid.T) {
			p.propose(&ClaimRecent{MailboxID: p.drawMailboxID("box")}, false)
		},
		"create": func(t *rapid.T) {
			c := &CreateMailbox{Account: p.drawAccount("acct"), Name: rapid.SampledFrom(propNames).Draw(t, "name"),
				SpecialUse: rapid.SampledFrom([]SpecialUse{UseNone, UseJunk, UseFlagged}).Draw(t, "use"), Subscribe: rapid.Bool().Draw(t, "sub")}
			p.propose(c, rapid.IntRange(0, 4).Draw(t, "skewed") == 0)
		},
		"delete": func(t *rapid.T) {
			p.propose(&DeleteMailbox{Account: p.drawAccount("acct"), Name: rapid.SampledFrom(propNames).Draw(t, "name")}, false)
		},
		"rename": func(t *rapid.T) {
			c := &RenameMailbox{Account: p.drawAccount("acct"), OldName: rapid.SampledFrom(propNames).Draw(t, "old"), NewName: rapid.SampledFrom(append(propNames, "Z/Y", "A/Q")).Draw(t, "new")}
			p.propose(c, rapid.IntRange(0, 4).Draw(t, "skewed") == 0)
		},
		"subscribe": func(t *rapid.T) {
			// Names with or without a mailbox: subscriptions outlive them.
			p.propose(&SetSubscribed{Account: p.drawAccount("acct"), Name: rapid.SampledFrom(append(propNames, "Z/Y")).Draw(t, "name"), Subscribed: rapid.Bool().Draw(t, "on")}, false)
		},
		"quota": func(t *rapid.T) {
			p.propose(&SetQuota{Address: p.drawAccount("acct"), QuotaBytes: rapid.SampledFrom([]int64{0, 100, 400}).Draw(t, "bytes"), QuotaMessages: rapid.SampledFrom([]int64{0, 4, 12}).Draw(t, "msgs")}, false)
		},
		"purge": func(t *rapid.T) {
			back := int64(rapid.IntRange(0, 40).Draw(t, "back")) * int64(time.Second)
			p.propose(&PurgeBlobs{Before: p.h.now - back, Limit: rapid.IntRange(0, 2).Draw(t, "limit")}, false)
		},
		"queue-tick": func(t *rapid.T) {
			step := int64(rapid.IntRange(-5, 40).Draw(t, "step")) * int64(time.Second)
			p.propose(&QueueTick{Time: max(p.m.queueNow+step, 0)}, false)
		},
		"queue-claim": func(t *rapid.T) {
			p.propose(&QueueClaim{Node: rapid.SampledFrom([]string{"n1", "n2", "n3"}).Draw(t, "node"), IDs: p.drawQueueIDs("ids"),
				Lease: int64(rapid.SampledFrom([]int{5, 20}).Draw(t, "lease")) * int64(time.Second)}, false)
		},
		"queue-renew": func(t *rapid.T) {
			tok, ids := p.drawToken("token"), p.drawQueueIDs("ids")
			if ht, held := p.drawHeld("held"); ht != 0 {
				tok, ids = ht, append(held, ids...)
			}
			p.propose(&QueueRenew{Token: tok, IDs: ids,
				Lease: int64(rapid.SampledFrom([]int{5, 20}).Draw(t, "lease")) * int64(time.Second)}, false)
		},
		"queue-report": func(t *rapid.T) {
			c := &QueueReport{Token: p.drawToken("token")}
			ids := p.drawQueueIDs("ids")
			if tok, held := p.drawHeld("held"); tok != 0 {
				c.Token, ids = tok, append(held, ids[:rapid.IntRange(0, 1).Draw(t, "extra")]...)
			}
			for i, id := range ids {
				o := QueueOutcome{ID: id, Kind: OutcomeKind(rapid.IntRange(1, 3).Draw(t, fmt.Sprint("kind", i))),
					Reply: rapid.SampledFrom([]string{"", "451 4.4.1 later", "550 5.1.1 no"}).Draw(t, fmt.Sprint("reply", i)), Host: "mx.remote.test"}
				if o.Kind == OutcomeDeferred {
					o.NextAttempt = p.m.queueNow + int64(rapid.IntRange(-5, 60).Draw(t, fmt.Sprint("next", i)))*int64(time.Second)
				}
				if rapid.IntRange(0, 2).Draw(t, fmt.Sprint("bounce", i)) == 0 {
					n := rapid.IntRange(0, 7).Draw(t, fmt.Sprint("dsnblob", i))
					b := &Bounce{Kind: rapid.SampledFrom([]string{BounceFailed, BounceDelayed, BounceDelivered}).Draw(t, fmt.Sprint("bkind", i)),
						Blob: blobID(n), Size: blobSize(n), Summary: []byte(fmt.Sprint("summary ", n))}
					if rapid.Bool().Draw(t, fmt.Sprint("blocal", i)) {
						b.Local = []DeliverTarget{{Account: rapid.SampledFrom([]string{propAccounts[0], propAccounts[1], "nobody@example.org"}).Draw(t, fmt.Sprint("bacct", i))}}
					}
					b.Remote = p.drawRemote(fmt.Sprint("bremote", i), len(b.Local) == 0)
					for j := range b.Remote {
						b.Remote[j].From = ""
					}
					o.Bounce = b
				}
				c.Outcomes = append(c.Outcomes, o)
			}
			p.propose(c, false)
		},
		"queue-admin": func(t *rapid.T) {
			p.propose(&QueueAdmin{Op: rapid.SampledFrom([]string{QueueRetry, QueueBounce, QueueDelete}).Draw(t, "op"), IDs: p.drawQueueIDs("ids")}, false)
		},
		"retry": func(t *rapid.T) {
			// A proposal retried after a leader change: same ID, new index.
			if len(p.log) == 0 {
				t.Skip("nothing to retry")
			}
			i := rapid.IntRange(0, len(p.log)-1).Draw(t, "which")
			e := p.log[i]
			e.Index = p.nextIndex()
			p.pending = append(p.pending, pendingEntry{entry: e, want: p.results[i], cmd: nil})
		},
		"flush": func(t *rapid.T) { p.flush() },
		"reopen-replay": func(t *rapid.T) {
			p.flush()
			if len(p.log) == 0 {
				t.Skip("empty log")
			}
			before := dump(t, p.h.f)
			p.h.reopen()
			k := rapid.IntRange(1, min(8, len(p.log))).Draw(t, "replay")
			p.h.takeEvents()
			got, err := p.h.f.Apply(p.log[len(p.log)-k:])
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if !bytes.Equal(got[i], p.results[len(p.log)-k+i]) {
					t.Fatalf("replayed entry %d: %s, want %s", i, got[i], p.results[len(p.log)-k+i])
				}
			}
			if len(p.h.takeEvents()) != 0 {
				t.Fatal("replay emitted events")
			}
			if dump(t, p.h.f) != before {
				t.Fatal("replay changed the state")
			}
		},
		"": func(t *rapid.T) {
			if rapid.IntRange(0, 2).Draw(t, "autoflush") == 0 {
				p.flush()
			}
			if len(p.pending) == 0 {
				p.check()
			}
		},
	}
}

// check compares the FSM with the model and checks the invariants that do
// not need the model.
func (p *propTest) check() {
	t := p.t
	blobRefs := map[BlobID]uint64{}
	err := p.h.f.View(func(tx *Tx) error {
		living := map[uint64]bool{}
		for _, addr := range propAccounts {
			ma := p.m.accts[addr]
			acct, err := tx.Account(addr)
			if err != nil {
				return err
			}
			wantBytes, wantMsgs := ma.usage()
			if acct.UsedBytes != wantBytes || acct.UsedMessages != wantMsgs {
				t.Fatalf("%s usage %d/%d, model %d/%d", addr, acct.UsedBytes, acct.UsedMessages, wantBytes, wantMsgs)
			}
			var sumBytes, sumMsgs int64
			boxes, err := tx.Mailboxes(addr)
			if err != nil {
				return err
			}
			var names []string
			for n := range ma.boxes {
				names = append(names, n)
			}
			slices.Sort(names)
			if len(boxes) != len(names) {
				t.Fatalf("%s mailboxes %d, model %v", addr, len(boxes), names)
			}
			for i, b := range boxes {
				mb := ma.boxes[names[i]]
				living[b.ID] = true
				sumB, sumM := p.checkMailbox(tx, b, mb)
				sumBytes += sumB
				sumMsgs += sumM
			}
			if sumBytes != acct.UsedBytes || sumMsgs != acct.UsedMessages {
				t.Fatalf("%s usage %d/%d, messages sum to %d/%d", addr, acct.UsedBytes, acct.UsedMessages, sumBytes, sumMsgs)
			}
			subs, err := tx.Subscriptions(addr)
			if err != nil {
				return err
			}
			var wantSubs []string
			for s := range ma.subs {
				wantSubs = append(wantSubs, s)
			}
			slices.Sort(wantSubs)
			if !slices.Equal(subs, wantSubs) {
				t.Fatalf("%s subscriptions %v, model %v", addr, subs, wantSubs)
			}
		}
		for id := range p.lastNext {
			if !living[id] {
				if _, err := tx.MailboxByID(id); err == nil {
					t.Fatalf("mailbox %d should be gone", id)
				}
			}
		}
		// Blob reference counts equal the message records naming them.
		for _, mb := range p.m.boxes {
			err := tx.Messages(mb.id, 1, math.MaxUint32, func(msg Message) error {
				blobRefs[msg.Blob]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		// The queue equals the model's, and each entry references its blob.
		if now := tx.QueueNow(); now != p.m.queueNow {
			t.Fatalf("queue clock %d, model %d", now, p.m.queueNow)
		}
		var entries int
		if err := tx.QueueAll(func(e QueueEntry) error {
			entries++
			blobRefs[e.Blob]++
			me := p.m.queue[e.ID]
			if me == nil {
				t.Fatalf("queue entry %s not in the model", e.ID)
			}
			want := QueueEntry{ID: e.ID, Blob: blobID(me.blob), Size: me.size, From: me.t.From, To: me.t.To, ORCPT: me.t.ORCPT,
				Notify: me.t.Notify, Ret: me.t.Ret, EnvID: me.t.EnvID, Account: me.t.Account, UTF8: me.t.UTF8, Created: me.created,
				Expires: me.t.Expires, DelayDSNAt: me.t.DelayDSNAt, DelayDSNSent: me.delaySent, NextAttempt: me.next,
				Attempts: me.attempts, LastReply: me.lastReply, LastHost: me.lastHost, Lease: me.lease, Bounce: me.bounceFlag}
			if e != want {
				t.Fatalf("queue entry\n %+v\nmodel\n %+v", e, want)
			}
			return nil
		}); err != nil {
			return err
		}
		if entries != len(p.m.queue) || tx.QueueLen() != entries || tx.QueueEmpty() != (entries == 0) {
			t.Fatalf("%d queue entries (QueueLen %d), model %d", entries, tx.QueueLen(), len(p.m.queue))
		}
		var due, wantDue []QueueID
		if err := tx.QueueDue(p.m.queueNow, 0, func(e QueueEntry) error {
			due = append(due, e.ID)
			return nil
		}); err != nil {
			return err
		}
		for id, e := range p.m.queue {
			if e.next <= p.m.queueNow && !p.m.held(e) && p.m.queueTick > id.Index {
				wantDue = append(wantDue, id)
			}
		}
		slices.SortFunc(wantDue, func(a, b QueueID) int {
			return cmp.Or(cmp.Compare(max(p.m.queue[a].next, 0), max(p.m.queue[b].next, 0)), cmp.Compare(a.Index, b.Index), cmp.Compare(a.N, b.N))
		})
		if !slices.Equal(due, wantDue) {
			t.Fatalf("due %v, model %v", due, wantDue)
		}
		var blobs int
		err := tx.ForEachBlob(func(b Blob) error {
			blobs++
			if b.Refs != blobRefs[b.ID] {
				t.Fatalf("blob %s refs %d, %d messages and queue entries point at it", b.ID, b.Refs, blobRefs[b.ID])
			}
			mbl := p.m.blobs[blobNum(b.ID)]
			if mbl == nil || uint64(mbl.refs) != b.Refs || mbl.zeroSince != b.ZeroSince || mbl.size != b.Size {
				t.Fatalf("blob %d %+v, model %+v", blobNum(b.ID), b, mbl)
			}
			return nil
		})
		if blobs != len(p.m.blobs) {
			t.Fatalf("%d blob records, model %d", blobs, len(p.m.blobs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (p *propTest) checkMailbox(tx *Tx, b Mailbox, mb *mBox) (bytes, msgs int64) {
	t := p.t
	if b.ID != mb.id || b.Name != mb.name || b.UIDValidity != mb.uv || b.UIDNext != mb.uidNext || b.HighestModSeq != mb.hms ||
		b.RecentWatermark != mb.recent || b.SpecialUse != mb.use || b.Subscribed != mb.acct.subs[mb.name] {
		t.Fatalf("mailbox %+v, model %+v", b, *mb)
	}
	// UIDVALIDITY: stable for a living mailbox, never shared.
	if uv, ok := p.seenUV[b.ID]; ok && uv != b.UIDValidity {
		t.Fatalf("mailbox %d UIDVALIDITY changed %d → %d", b.ID, uv, b.UIDValidity)
	}
	if owner, ok := p.uvOwner[b.UIDValidity]; ok && owner != b.ID {
		t.Fatalf("UIDVALIDITY %d of mailbox %d was issued to mailbox %d before", b.UIDValidity, b.ID, owner)
	}
	p.seenUV[b.ID], p.uvOwner[b.UIDValidity] = b.UIDValidity, b.ID
	prevNext, known := p.lastNext[b.ID]
	if b.UIDNext < prevNext || b.HighestModSeq < p.lastHMS[b.ID] {
		t.Fatalf("mailbox %d went back: UIDNEXT %d→%d, HIGHESTMODSEQ %d→%d", b.ID, prevNext, b.UIDNext, p.lastHMS[b.ID], b.HighestModSeq)
	}
	uids, err := tx.UIDs(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := mb.uids()
	if !equalU32(uids, want) {
		t.Fatalf("mailbox %d UIDs %v, model %v", b.ID, uids, want)
	}
	prevMods := p.lastMods[b.ID]
	mods := map[uint32]uint64{}
	var unseen, deleted, flagged []uint32
	var size int64
	var last uint32
	err = tx.Messages(b.ID, 1, math.MaxUint32, func(msg Message) error {
		if msg.UID <= last || msg.UID >= b.UIDNext {
			t.Fatalf("mailbox %d UID %d after %d, UIDNEXT %d", b.ID, msg.UID, last, b.UIDNext)
		}
		last = msg.UID
		if old, ok := prevMods[msg.UID]; known && !ok && msg.UID < prevNext {
			t.Fatalf("mailbox %d UID %d reused (UIDNEXT was %d)", b.ID, msg.UID, prevNext)
		} else if ok && msg.ModSeq < old {
			t.Fatalf("mailbox %d UID %d MODSEQ went back %d → %d", b.ID, msg.UID, old, msg.ModSeq)
		}
		if msg.ModSeq > b.HighestModSeq {
			t.Fatalf("mailbox %d UID %d MODSEQ %d above HIGHESTMODSEQ %d", b.ID, msg.UID, msg.ModSeq, b.HighestModSeq)
		}
		mods[msg.UID] = msg.ModSeq
		mm := mb.msgs[msg.UID]
		if msg.Blob != blobID(mm.blob) || msg.Size != mm.size || msg.ModSeq != mm.modseq || !slices.Equal(msg.Flags.Strings(), mm.flags.Strings()) {
			t.Fatalf("mailbox %d message %+v, model %+v", b.ID, msg, *mm)
		}
		size += msg.Size
		if msg.Flags.System&FlagSeen == 0 {
			unseen = append(unseen, msg.UID)
		}
		if msg.Flags.System&FlagDeleted != 0 {
			deleted = append(deleted, msg.UID)
		}
		if msg.Flags.System&FlagFlagged != 0 {
			flagged = append(flagged, msg.UID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int(b.Messages) != len(uids) || int(b.Unseen) != len(unseen) || int(b.Deleted) != len(deleted) || b.Size != size {
		t.Fatalf("mailbox %d counters %+v; messages %d unseen %d deleted %d size %d", b.ID, b, len(uids), len(unseen), len(deleted), size)
	}
	for _, ix := range []struct {
		f    IndexedFlag
		want []uint32
	}{{IndexUnseen, unseen}, {IndexDeleted, deleted}, {IndexFlagged, flagged}} {
		got, err := tx.UIDsWithFlag(b.ID, ix.f)
		if err != nil {
			t.Fatal(err)
		}
		if !equalU32(got, ix.want) {
			t.Fatalf("mailbox %d index %c %v, messages say %v", b.ID, ix.f, got, ix.want)
		}
	}
	p.lastNext[b.ID], p.lastHMS[b.ID], p.lastMods[b.ID] = b.UIDNext, b.HighestModSeq, mods
	return size, int64(len(uids))
}

func TestPropertyStateMachineMatchesModel(t *testing.T) { checkAgainstModel(t, nil) }

// The queue's kinds, often enough to reach leases that run out, stale
// tokens, bounces and admin actions on entries in every state.
func TestPropertyQueueMatchesModel(t *testing.T) {
	checkAgainstModel(t, []string{"deliver", "expunge", "purge", "queue-tick", "queue-claim", "queue-renew",
		"queue-report", "queue-admin", "retry", "flush", "reopen-replay", ""})
}

// checkAgainstModel runs the actions named in only (nil: all).
func checkAgainstModel(t *testing.T, only []string) {
	rapid.Check(t, func(rt *rapid.T) {
		dir, err := os.MkdirTemp(t.TempDir(), "prop")
		if err != nil {
			rt.Fatal(err)
		}
		h := newHarnessIn(rt, dir)
		h.setup()
		p := &propTest{t: rt, h: h, m: modelFrom(rt, h),
			seenUV: map[uint64]uint32{}, uvOwner: map[uint32]uint64{}, lastNext: map[uint64]uint32{},
			lastHMS: map[uint64]uint64{}, lastMods: map[uint64]map[uint32]uint64{}}
		p.check()
		actions := p.actions()
		if only != nil {
			for name := range actions {
				if !slices.Contains(only, name) {
					delete(actions, name)
				}
			}
		}
		rt.Repeat(actions)
		p.flush()
		p.check()
		final := dump(rt, h.f)

		// Snapshot + restore into a fresh FSM reproduces the state exactly.
		snap, err := h.f.Snapshot()
		if err != nil {
			rt.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			rt.Fatal(err)
		}
		snap.Release()
		restored := newHarnessIn(rt, dir+"-restored")
		if err := restored.f.Restore(&buf); err != nil {
			rt.Fatal(err)
		}
		if dump(rt, restored.f) != final {
			rt.Fatal("restored state differs")
		}

		// Determinism: the same log applied one entry per batch by another
		// node ends in byte-identical state.
		replica := newHarnessIn(rt, dir+"-replica")
		replica.setup()
		for _, e := range p.log {
			if _, err := replica.f.Apply([]consensus.Entry{e}); err != nil {
				rt.Fatal(err)
			}
		}
		if dump(rt, replica.f) != final {
			rt.Fatal("a replica applying the same log in other batches differs")
		}
	})
}
