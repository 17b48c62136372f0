package state

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// The outbound queue: one entry per recipient outside the cluster of one
// accepted message, until the remote side took it, it failed for good, or
// an operator removed it. Its times (NextAttempt, Lease.Until) are judged
// by the queue clock, which only the leader advances (QueueTick): Apply
// never reads a clock, and a node's own clock never decides whether a lease
// ran out.

// QueueID names a queue entry: the log index of the command that created it
// and the recipient's ordinal in that command. Its text form is
// "<index>.<n>".
type QueueID struct {
	Index uint64
	N     uint16
}

func (id QueueID) String() string {
	return strconv.FormatUint(id.Index, 10) + "." + strconv.Itoa(int(id.N))
}

// IsZero reports whether id is unset.
func (id QueueID) IsZero() bool { return id == QueueID{} }

// ParseQueueID parses the text form "<index>.<n>" of an ID a command
// could have made (index 1 or more), e.g. one an operator typed.
func ParseQueueID(s string) (QueueID, error) {
	id, err := parseQueueID(s)
	if err == nil && id.Index == 0 {
		err = fmt.Errorf("state: queue id %q: no entry has index 0", s)
	}
	return id, err
}

func parseQueueID(s string) (QueueID, error) {
	i, n, ok := strings.Cut(s, ".")
	if !ok {
		return QueueID{}, fmt.Errorf("state: queue id %q: want <index>.<n>", s)
	}
	index, err := strconv.ParseUint(i, 10, 64)
	if err != nil {
		return QueueID{}, fmt.Errorf("state: queue id %q: bad index", s)
	}
	ord, err := strconv.ParseUint(n, 10, 16)
	if err != nil {
		return QueueID{}, fmt.Errorf("state: queue id %q: bad ordinal", s)
	}
	return QueueID{Index: index, N: uint16(ord)}, nil
}

func (id QueueID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads every value MarshalText writes, the zero ID
// included: a command that names one must decode on every node (and then
// find no entry), never stop them.
func (id *QueueID) UnmarshalText(b []byte) error {
	v, err := parseQueueID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// DSN NOTIFY bits (RFC 3461) of QueueTarget.Notify and QueueEntry.Notify; 0
// means NOTIFY was not given (the default: failure and delay).
const (
	NotifyNever   uint8 = 1
	NotifySuccess uint8 = 2
	NotifyFailure uint8 = 4
	NotifyDelay   uint8 = 8
)

// Lease is a claim on a queue entry. The zero value: not leased.
type Lease struct {
	Holder string // node ID
	Token  uint64 // the log index of the QueueClaim: the fencing token
	Until  int64  // queue clock, unix nanos: the lease has run out once the clock reaches it
}

// Held reports whether the lease is running at queue time now.
func (l Lease) Held(now int64) bool { return l.Token != 0 && l.Until > now }

// QueueEntry is one recipient of one message for outside the cluster.
type QueueEntry struct {
	ID           QueueID
	Blob         BlobID
	Size         int64
	From         string // envelope sender on the wire ("" = null sender, a DSN)
	To           string
	ORCPT        string
	Notify       uint8
	Ret          string
	EnvID        string
	Account      string
	UTF8         bool
	Created      int64 // unix nanos (proposer time at enqueue)
	Expires      int64 // unix nanos
	DelayDSNAt   int64 // unix nanos; 0: never
	DelayDSNSent bool
	NextAttempt  int64 // unix nanos on the queue clock
	Attempts     int
	LastReply    string
	LastHost     string
	Lease        Lease
	// Bounce: an operator asked for an immediate permanent failure
	// (QueueAdmin bounce); the worker reports Failed with a DSN.
	Bounce bool
}

// Due reports whether the entry may be claimed at queue time now: its next
// attempt has come and no lease is running.
func (e *QueueEntry) Due(now int64) bool { return e.NextAttempt <= now && !e.Lease.Held(now) }

// queueRec is the stored form of a queue entry (a cold JSON record; the ID
// is the key).
type queueRec struct {
	Blob         BlobID `json:"blob"`
	Size         int64  `json:"size"`
	From         string `json:"from,omitempty"`
	To           string `json:"to"`
	ORCPT        string `json:"orcpt,omitempty"`
	Notify       uint8  `json:"notify,omitempty"`
	Ret          string `json:"ret,omitempty"`
	EnvID        string `json:"envid,omitempty"`
	Account      string `json:"account,omitempty"`
	UTF8         bool   `json:"utf8,omitempty"`
	Created      int64  `json:"created"`
	Expires      int64  `json:"expires,omitempty"`
	DelayDSNAt   int64  `json:"delay_dsn_at,omitempty"`
	DelayDSNSent bool   `json:"delay_dsn_sent,omitempty"`
	NextAttempt  int64  `json:"next"`
	Attempts     int    `json:"attempts,omitempty"`
	LastReply    string `json:"last_reply,omitempty"`
	LastHost     string `json:"last_host,omitempty"`
	Holder       string `json:"holder,omitempty"`
	Token        uint64 `json:"token,omitempty"`
	Until        int64  `json:"until,omitempty"`
	Bounce       bool   `json:"bounce,omitempty"`
}

func (r *queueRec) view(id QueueID) QueueEntry {
	return QueueEntry{
		ID: id, Blob: r.Blob, Size: r.Size, From: r.From, To: r.To, ORCPT: r.ORCPT, Notify: r.Notify,
		Ret: r.Ret, EnvID: r.EnvID, Account: r.Account, UTF8: r.UTF8, Created: r.Created,
		Expires: r.Expires, DelayDSNAt: r.DelayDSNAt, DelayDSNSent: r.DelayDSNSent,
		NextAttempt: r.NextAttempt, Attempts: r.Attempts, LastReply: r.LastReply, LastHost: r.LastHost,
		Lease: Lease{Holder: r.Holder, Token: r.Token, Until: r.Until}, Bounce: r.Bounce,
	}
}

func (r *queueRec) lease() Lease { return Lease{Holder: r.Holder, Token: r.Token, Until: r.Until} }

func (r *queueRec) setLease(l Lease) { r.Holder, r.Token, r.Until = l.Holder, l.Token, l.Until }

const queueKeyLen = 10

func queueKey(id QueueID) []byte {
	k := make([]byte, queueKeyLen)
	binary.BigEndian.PutUint64(k, id.Index)
	binary.BigEndian.PutUint16(k[8:], id.N)
	return k
}

func queueIDOf(k []byte) QueueID {
	return QueueID{Index: binary.BigEndian.Uint64(k), N: binary.BigEndian.Uint16(k[8:])}
}

// queueDueKey orders entries by next attempt. Times before 1970 sort as 0.
func queueDueKey(next int64, id QueueID) []byte {
	k := make([]byte, 8, 8+queueKeyLen)
	binary.BigEndian.PutUint64(k, uint64(max(next, 0)))
	return append(k, queueKey(id)...)
}

func decodeQueueRec(v []byte) (queueRec, error) {
	var r queueRec
	return r, decodeJSONRecord(v, &r)
}

// QueueNow is the queue clock (unix nanos; 0 before the first QueueTick).
func (t *Tx) QueueNow() int64 { return queueNow(t.bucket(bktMeta)) }

func queueNow(meta interface{ Get([]byte) []byte }) int64 {
	if v := meta.Get(metaQueueNow); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func queueTickIndex(meta interface{ Get([]byte) []byte }) uint64 {
	if v := meta.Get(metaQueueTick); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// clockReadSince reports whether the queue clock was written (by a tick
// at index tick) after the entry was created. Until then the clock may be
// far behind real time (the leader ticks only while the queue has
// entries), and a lease reckoned from it would have run out at the next
// tick: another node could then send the message a second time. So an
// entry is claimed only after a tick that follows its creation.
func clockReadSince(id QueueID, tick uint64) bool { return tick > id.Index }

// QueueEntry returns one queue entry (ErrNoSuchQueueEntry).
func (t *Tx) QueueEntry(id QueueID) (QueueEntry, error) {
	v := t.bucket(bktQueue).Get(queueKey(id))
	if v == nil {
		return QueueEntry{}, ErrNoSuchQueueEntry
	}
	r, err := decodeQueueRec(v)
	if err != nil {
		return QueueEntry{}, err
	}
	return r.view(id), nil
}

// QueueDue calls fn, oldest next attempt first, for at most limit entries
// (0: no limit) that are due at queue time now: NextAttempt <= now, no
// lease running (none, or Until <= now), and the queue clock ticked since
// the entry was created (see clockReadSince).
func (t *Tx) QueueDue(now int64, limit int, fn func(QueueEntry) error) error {
	tick := queueTickIndex(t.bucket(bktMeta))
	q := t.bucket(bktQueue)
	c := t.bucket(bktQueueDue).Cursor()
	n := 0
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 8+queueKeyLen {
			return errCorrupt
		}
		if int64(binary.BigEndian.Uint64(k)) > max(now, 0) {
			break
		}
		id := queueIDOf(k[8:])
		v := q.Get(k[8:])
		if v == nil {
			return fmt.Errorf("%w: queue due index names missing entry %s", errCorrupt, id)
		}
		r, err := decodeQueueRec(v)
		if err != nil {
			return err
		}
		e := r.view(id)
		if !e.Due(now) || !clockReadSince(id, tick) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
		if n++; limit > 0 && n >= limit {
			break
		}
	}
	return nil
}

// QueueAll calls fn for every queue entry in ID order (oldest first).
func (t *Tx) QueueAll(fn func(QueueEntry) error) error {
	c := t.bucket(bktQueue).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != queueKeyLen {
			return errCorrupt
		}
		r, err := decodeQueueRec(v)
		if err != nil {
			return err
		}
		if err := fn(r.view(queueIDOf(k))); err != nil {
			return err
		}
	}
	return nil
}

// QueueLen is the number of queue entries.
func (t *Tx) QueueLen() int { return t.bucket(bktQueue).Stats().KeyN }

// QueueEmpty reports whether the queue has no entries (cheaper than
// QueueLen).
func (t *Tx) QueueEmpty() bool {
	k, _ := t.bucket(bktQueue).Cursor().First()
	return k == nil
}

// --- applier side -------------------------------------------------------------

func (a *applier) queueNow() int64 { return queueNow(a.meta) }

func (a *applier) queueRecord(id QueueID) (queueRec, bool, error) {
	v := a.queue.Get(queueKey(id))
	if v == nil {
		return queueRec{}, false, nil
	}
	r, err := decodeQueueRec(v)
	return r, true, err
}

// putQueue stores r under id; old is the next attempt of the stored record
// (ignored when isNew), so the due index moves along.
func (a *applier) putQueue(id QueueID, r *queueRec, oldNext int64, isNew bool) error {
	v, err := encodeJSONRecord(r)
	if err != nil {
		return err
	}
	if !isNew && oldNext != r.NextAttempt {
		if err := a.queueDue.Delete(queueDueKey(oldNext, id)); err != nil {
			return err
		}
	}
	if isNew || oldNext != r.NextAttempt {
		if err := a.queueDue.Put(queueDueKey(r.NextAttempt, id), nil); err != nil {
			return err
		}
	}
	return a.queue.Put(queueKey(id), v)
}

// removeQueue deletes an entry and releases its blob reference.
func (a *applier) removeQueue(id QueueID, r *queueRec) error {
	if err := a.queueDue.Delete(queueDueKey(r.NextAttempt, id)); err != nil {
		return err
	}
	if err := a.queue.Delete(queueKey(id)); err != nil {
		return err
	}
	return a.unref(r.Blob)
}

// validQueueTarget checks what Apply relies on; the proposer checks the
// rest (address syntax, policy).
func validQueueTarget(t *QueueTarget) bool {
	return t.To != "" && t.Notify <= NotifyNever|NotifySuccess|NotifyFailure|NotifyDelay &&
		(t.Ret == "" || t.Ret == "FULL" || t.Ret == "HDRS")
}

// enqueue creates queue entries for targets, numbered from *n on under this
// entry's index (the caller checked validQueueTarget and that the numbers
// fit), each referencing blob; they are due at once.
func (a *applier) enqueue(blob BlobID, size int64, summary []byte, targets []QueueTarget, n *int) ([]QueueID, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	now := a.queueNow()
	ids := make([]QueueID, 0, len(targets))
	for _, t := range targets {
		id := QueueID{Index: a.index, N: uint16(*n)}
		*n++
		if a.queue.Get(queueKey(id)) != nil {
			return nil, fmt.Errorf("%w: queue entry %s exists", errCorrupt, id)
		}
		r := queueRec{
			Blob: blob, Size: size, From: t.From, To: t.To, ORCPT: t.ORCPT, Notify: t.Notify, Ret: t.Ret,
			EnvID: t.EnvID, Account: t.Account, UTF8: t.UTF8, Created: a.now, Expires: t.Expires,
			DelayDSNAt: t.DelayDSNAt, NextAttempt: now,
		}
		if err := a.putQueue(id, &r, 0, true); err != nil {
			return nil, err
		}
		if err := a.ref(blob, uint64(size), summary); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	a.emit(QueueChanged{Index: a.index, Due: ids})
	return ids, nil
}
