package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	bolt "go.etcd.io/bbolt"
)

// applier applies commands inside one read-write transaction.
//
// Handlers follow one rule: check everything that can fail with a sentinel
// error before the first write. A sentinel error then becomes the command's
// result with nothing written; any other error (storage, corrupt record)
// aborts the whole batch.
type applier struct {
	tx                                              *bolt.Tx
	meta, domains, accounts, accountIDs, usage      *bolt.Bucket
	byDomain, aliases, mailboxes, mboxNames, subs   *bolt.Bucket
	messages, flagIndex, blobs, summaries, blobZero *bolt.Bucket
	dedup, dedupIndex, queue, queueDue              *bolt.Bucket

	// accounts decoded in this transaction, by address; lookups only.
	// putAccount and deleteAccount keep it in step with the bucket.
	accountCache map[string]accountRec

	index      uint64 // Raft index of the entry being applied: the MODSEQ of its changes
	addressing uint64 // index of the last entry in this batch whose kind is addressing; 0: none
	now        int64  // the proposer's time of the command being applied, unix nanos
	events     []Event
	skipped    []byte // type bytes of unknown advisory entries skipped in this batch
}

func newApplier(tx *bolt.Tx) *applier {
	return &applier{
		tx:         tx,
		meta:       tx.Bucket(bktMeta),
		domains:    tx.Bucket(bktDomains),
		accounts:   tx.Bucket(bktAccounts),
		accountIDs: tx.Bucket(bktAccountIDs),
		usage:      tx.Bucket(bktUsage),
		byDomain:   tx.Bucket(bktByDomain),
		aliases:    tx.Bucket(bktAliases),
		mailboxes:  tx.Bucket(bktMailboxes),
		mboxNames:  tx.Bucket(bktMboxNames),
		subs:       tx.Bucket(bktSubs),
		messages:   tx.Bucket(bktMessages),
		flagIndex:  tx.Bucket(bktFlagIndex),
		blobs:      tx.Bucket(bktBlobs),
		summaries:  tx.Bucket(bktSummaries),
		blobZero:   tx.Bucket(bktBlobZero),
		dedup:      tx.Bucket(bktDedup),
		dedupIndex: tx.Bucket(bktDedupIndex),
		queue:      tx.Bucket(bktQueue),
		queueDue:   tx.Bucket(bktQueueDue),

		accountCache: map[string]accountRec{},
	}
}

func (a *applier) emit(e Event) { a.events = append(a.events, e) }

// rememberedResult is the stored result of a proposal ID, or nil.
func (a *applier) rememberedResult(id consensus.ProposalID) []byte {
	if id == (consensus.ProposalID{}) {
		return nil
	}
	if v := a.dedup.Get(id[:]); len(v) >= 8 {
		return bytes.Clone(v[8:])
	}
	return nil
}

// applyEntry applies one new entry and returns its result bytes. A zero
// proposal ID opts out of deduplication.
func (a *applier) applyEntry(e consensus.Entry) ([]byte, error) {
	hasID := e.ID != (consensus.ProposalID{})
	if hasID {
		if v := a.dedup.Get(e.ID[:]); v != nil {
			if len(v) < 8 {
				return nil, errCorrupt
			}
			return bytes.Clone(v[8:]), nil
		}
	}
	k, cmd, err := decode(e.Data)
	if errors.Is(err, errSkippable) {
		// An advisory command of a newer version: it changes nothing
		// this version keeps, so skip it (no result, no dedup record).
		a.skipped = append(a.skipped, e.Data[0])
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: entry %d: %w", e.Index, err)
	}
	a.index = e.Index
	if k.addressing {
		a.addressing = e.Index
	}
	mark := len(a.events)
	res, err := k.apply(a, cmd)
	if err != nil {
		code := sentinelCode(err)
		if code == CodeOK {
			return nil, fmt.Errorf("state: entry %d (%s): %w", e.Index, k.name, err)
		}
		a.events = a.events[:mark] // nothing was written; belt and braces
		res = k.refused(Status{Code: code})
	}
	out, err := encodeResult(res)
	if err != nil {
		return nil, err
	}
	if hasID {
		v := make([]byte, 8, 8+len(out))
		binary.BigEndian.PutUint64(v, e.Index)
		v = append(v, out...)
		ik := make([]byte, 8, 8+len(e.ID))
		binary.BigEndian.PutUint64(ik, e.Index)
		ik = append(ik, e.ID[:]...)
		if err := a.dedup.Put(bytes.Clone(e.ID[:]), v); err != nil {
			return nil, err
		}
		if err := a.dedupIndex.Put(ik, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pruneDedup forgets proposal IDs applied at or below applied-window.
func (a *applier) pruneDedup(applied, window uint64) error {
	if applied <= window {
		return nil
	}
	cutoff := applied - window
	var keys [][]byte
	c := a.dedupIndex.Cursor()
	for k, _ := c.First(); k != nil && len(k) >= 8 && binary.BigEndian.Uint64(k) <= cutoff; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := a.dedup.Delete(k[8:]); err != nil {
			return err
		}
		if err := a.dedupIndex.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// sentinelCode is the result code of a command failure, or CodeOK if err
// is not one of the sentinels (then it is fatal).
func sentinelCode(err error) Code {
	for c, e := range codeErrs {
		if e != nil && errors.Is(err, e) {
			return Code(c)
		}
	}
	return CodeOK
}

// --- counters -------------------------------------------------------------

func (a *applier) nextID(key []byte) (uint64, error) {
	var last uint64
	if v := a.meta.Get(key); len(v) == 8 {
		last = binary.BigEndian.Uint64(v)
	}
	if last == math.MaxUint64 {
		return 0, fmt.Errorf("state: counter %s exhausted", key) // unreachable in practice; fatal
	}
	return last + 1, a.meta.Put(key, u64(last+1))
}

func bytesToU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// corruptIfMissing turns a "no such" sentinel met after writes began (where
// it can only mean an inconsistent file) into a fatal error.
func corruptIfMissing(err error) error {
	if err != nil && sentinelCode(err) != CodeOK {
		return fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return err
}

func (a *applier) lastUIDValidity() uint32 {
	if v := a.meta.Get(metaLastUIDValidity); len(v) == 4 {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// checkUIDValidityRoom fails before any write if n more UIDVALIDITY values
// might not fit in 32 bits.
func (a *applier) checkUIDValidityRoom(n int) error {
	if uint64(a.lastUIDValidity())+uint64(n) > math.MaxUint32 {
		return ErrExhausted
	}
	return nil
}

// nextUIDValidity is max(last issued+1, proposal time in seconds): unique
// for ever, and close to the clock so a restored-from-scratch cluster does
// not reissue values clients have cached.
func (a *applier) nextUIDValidity() (uint32, error) {
	last := a.lastUIDValidity()
	secs := a.now / int64(time.Second)
	cand := uint32(min(max(secs, 1), math.MaxUint32))
	if cand <= last {
		if last == math.MaxUint32 {
			return 0, ErrExhausted
		}
		cand = last + 1
	}
	return cand, a.meta.Put(metaLastUIDValidity, u32(cand))
}

// --- lookups --------------------------------------------------------------

func (a *applier) domainRecord(domain string) (domainRec, error) {
	var rec domainRec
	v := a.domains.Get([]byte(domain))
	if v == nil {
		return rec, ErrNoSuchDomain
	}
	return rec, decodeJSONRecord(v, &rec)
}

func (a *applier) account(address string) (accountRec, error) {
	addr, err := NormalizeAddress(address)
	if err != nil {
		return accountRec{}, ErrNoSuchAccount
	}
	return a.accountByAddress(addr)
}

func (a *applier) accountByAddress(addr string) (accountRec, error) {
	if rec, ok := a.accountCache[addr]; ok {
		return cloneAccount(rec), nil
	}
	rec, err := getAccount(a.accounts, addr)
	if err == nil {
		a.accountCache[addr] = cloneAccount(rec)
	}
	return rec, err
}

// cloneAccount copies the slice so callers may modify their copy.
func cloneAccount(rec accountRec) accountRec {
	rec.Forward = slices.Clone(rec.Forward)
	return rec
}

func getAccount(b *bolt.Bucket, addr string) (accountRec, error) {
	var rec accountRec
	v := b.Get([]byte(addr))
	if v == nil {
		return rec, ErrNoSuchAccount
	}
	return rec, decodeJSONRecord(v, &rec)
}

func (a *applier) accountAddress(id uint64) (string, error) {
	v := a.accountIDs.Get(u64(id))
	if v == nil {
		return "", fmt.Errorf("%w: account %d has no address", errCorrupt, id)
	}
	return string(v), nil
}

func (a *applier) accountByID(id uint64) (accountRec, error) {
	addr, err := a.accountAddress(id)
	if err != nil {
		return accountRec{}, err
	}
	rec, err := a.accountByAddress(addr)
	if errors.Is(err, ErrNoSuchAccount) {
		return rec, fmt.Errorf("%w: account %d missing", errCorrupt, id)
	}
	return rec, err
}

func (a *applier) putAccount(rec *accountRec) error {
	v, err := encodeJSONRecord(rec)
	if err != nil {
		return err
	}
	a.accountCache[rec.Address] = cloneAccount(*rec)
	return a.accounts.Put([]byte(rec.Address), v)
}

func (a *applier) loadUsage(account uint64) (usageRec, error) {
	v := a.usage.Get(u64(account))
	if v == nil {
		return usageRec{}, fmt.Errorf("%w: no usage for account %d", errCorrupt, account)
	}
	return decodeUsage(v)
}

func (a *applier) putUsage(account uint64, u *usageRec) error {
	return a.usage.Put(u64(account), u.encode())
}

func (a *applier) mailbox(id uint64) (mboxRec, error) {
	v := a.mailboxes.Get(u64(id))
	if v == nil {
		return mboxRec{}, ErrNoSuchMailbox
	}
	return decodeMbox(v)
}

func (a *applier) putMailbox(mb *mboxRec) error {
	return a.mailboxes.Put(u64(mb.id), mb.encode())
}

func (a *applier) mailboxID(account uint64, name string) (uint64, bool) {
	v := a.mboxNames.Get(nameKey(account, name))
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

func (a *applier) hasChildren(account uint64, name string) bool {
	prefix := nameKey(account, name+HierarchySeparator)
	k, _ := a.mboxNames.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// quotaAllows reports whether adding bytes and msgs keeps the account in
// its limits (0 = unlimited).
func quotaAllows(acct *accountRec, u *usageRec, bytes, msgs uint64) bool {
	if acct.QuotaBytes > 0 && u.bytes+bytes > uint64(acct.QuotaBytes) {
		return false
	}
	if acct.QuotaMessages > 0 && u.messages+msgs > uint64(acct.QuotaMessages) {
		return false
	}
	return true
}

// --- cursors ----------------------------------------------------------------

// keysWithPrefix copies every key (and value) under prefix, in order.
func keysWithPrefix(b *bolt.Bucket, prefix []byte) (keys, values [][]byte) {
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		keys = append(keys, bytes.Clone(k))
		values = append(values, bytes.Clone(v))
	}
	return keys, values
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// scanUIDs calls fn for each key prefix|UID with the UID in set, in UID
// order; a nil set means every UID. fn must not modify the bucket.
func scanUIDs(b *bolt.Bucket, prefix []byte, set UIDSet, fn func(uid uint32, v []byte) error) error {
	if set == nil {
		set = UIDSet{{1, math.MaxUint32}}
	}
	c := b.Cursor()
	seek := make([]byte, len(prefix)+4)
	copy(seek, prefix)
	for _, r := range set {
		binary.BigEndian.PutUint32(seek[len(prefix):], r.Start)
		for k, v := c.Seek(seek); k != nil && len(k) == len(seek) && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			uid := binary.BigEndian.Uint32(k[len(prefix):])
			if uid > r.Stop {
				break
			}
			if err := fn(uid, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadMessages decodes the messages of a mailbox whose UIDs are in set.
func (a *applier) loadMessages(mailbox uint64, set UIDSet) ([]msgRec, error) {
	var out []msgRec
	err := scanUIDs(a.messages, u64(mailbox), set, func(_ uint32, v []byte) error {
		m, err := decodeMsg(v)
		out = append(out, m)
		return err
	})
	return out, err
}

// --- blobs ------------------------------------------------------------------

// ref adds a reference to a blob, creating its record (and storing the
// summary, once) on first use.
func (a *applier) ref(id BlobID, size uint64, summary []byte) error {
	key := bytes.Clone(id[:])
	var rec blobRec
	if v := a.blobs.Get(key); v == nil {
		rec = blobRec{size: size}
	} else {
		var err error
		if rec, err = decodeBlob(v); err != nil {
			return err
		}
		if rec.refs == 0 {
			if err := a.blobZero.Delete(blobZeroKey(rec.zeroSince, id)); err != nil {
				return err
			}
			rec.zeroSince = 0
		}
	}
	if len(summary) > 0 && a.summaries.Get(key) == nil {
		if err := a.summaries.Put(key, bytes.Clone(summary)); err != nil {
			return err
		}
	}
	rec.refs++
	return a.blobs.Put(key, rec.encode())
}

// unref drops a reference; at zero the blob enters the purge queue, stamped
// with the proposal time.
func (a *applier) unref(id BlobID) error {
	key := bytes.Clone(id[:])
	v := a.blobs.Get(key)
	if v == nil {
		return fmt.Errorf("%w: message refers to unknown blob %s", errCorrupt, id)
	}
	rec, err := decodeBlob(v)
	if err != nil {
		return err
	}
	if rec.refs == 0 {
		return fmt.Errorf("%w: blob %s has no references to drop", errCorrupt, id)
	}
	rec.refs--
	if rec.refs == 0 {
		rec.zeroSince = max(a.now, 0)
		if err := a.blobZero.Put(blobZeroKey(rec.zeroSince, id), nil); err != nil {
			return err
		}
	}
	return a.blobs.Put(key, rec.encode())
}

// --- messages -----------------------------------------------------------------

// insertMessage stores m in mb under the next UID (the caller checked
// uidExhausted), updates counters, indexes, usage and the blob's count, and
// emits MessageAdded. The caller stores mb and u afterwards.
func (a *applier) insertMessage(mb *mboxRec, account string, m msgRec, summary []byte, u *usageRec) (uint32, error) {
	m.uid = mb.uidNext
	m.modseq = a.index
	mb.uidNext++
	if err := a.messages.Put(msgKey(mb.id, m.uid), m.encode()); err != nil {
		return 0, err
	}
	idx, n := indexedFlags(m.flags.System)
	for _, f := range idx[:n] {
		if err := a.flagIndex.Put(flagKey(mb.id, f, m.uid), nil); err != nil {
			return 0, err
		}
	}
	mb.countMessage(m, +1)
	mb.highestModSeq = a.index
	u.bytes += m.size
	u.messages++
	if err := a.ref(m.blob, m.size, summary); err != nil {
		return 0, err
	}
	a.emit(MessageAdded{Index: a.index, Account: account, MailboxID: mb.id, UID: m.uid, ModSeq: m.modseq, Flags: m.flags, Size: int64(m.size)})
	return m.uid, nil
}

// removeMessage deletes m from mb with its index entries and releases its
// blob reference. The caller sets HIGHESTMODSEQ, emits Expunged and stores
// mb and u.
func (a *applier) removeMessage(mb *mboxRec, m msgRec, u *usageRec) error {
	if err := a.messages.Delete(msgKey(mb.id, m.uid)); err != nil {
		return err
	}
	idx, n := indexedFlags(m.flags.System)
	for _, f := range idx[:n] {
		if err := a.flagIndex.Delete(flagKey(mb.id, f, m.uid)); err != nil {
			return err
		}
	}
	mb.countMessage(m, -1)
	u.bytes -= min(u.bytes, m.size)
	u.messages -= min(u.messages, 1)
	return a.unref(m.blob)
}

// countMessage adds (sign +1) or removes (-1) m from the counters.
func (mb *mboxRec) countMessage(m msgRec, sign int) {
	add := func(c *uint32, on bool) {
		if on {
			*c = uint32(int64(*c) + int64(sign))
		}
	}
	add(&mb.messages, true)
	add(&mb.unseen, m.flags.System&FlagSeen == 0)
	add(&mb.deleted, m.flags.System&FlagDeleted != 0)
	if sign > 0 {
		mb.size += m.size
	} else {
		mb.size -= min(mb.size, m.size)
	}
}

// changeFlags rewrites m with new flags and MODSEQ, fixing indexes and
// counters.
func (a *applier) changeFlags(mb *mboxRec, m *msgRec, flags Flags) error {
	oldIdx, on := indexedFlags(m.flags.System)
	newIdx, nn := indexedFlags(flags.System)
	for _, f := range oldIdx[:on] {
		if !containsFlag(newIdx[:nn], f) {
			if err := a.flagIndex.Delete(flagKey(mb.id, f, m.uid)); err != nil {
				return err
			}
		}
	}
	for _, f := range newIdx[:nn] {
		if !containsFlag(oldIdx[:on], f) {
			if err := a.flagIndex.Put(flagKey(mb.id, f, m.uid), nil); err != nil {
				return err
			}
		}
	}
	mb.countMessage(*m, -1)
	m.flags = flags
	m.modseq = a.index
	mb.countMessage(*m, +1)
	return a.messages.Put(msgKey(mb.id, m.uid), m.encode())
}

func containsFlag(list []IndexedFlag, f IndexedFlag) bool {
	for _, g := range list {
		if g == f {
			return true
		}
	}
	return false
}

// --- mailboxes ----------------------------------------------------------------

// newMailbox creates an empty mailbox (the caller validated the name, its
// absence and the UIDVALIDITY room) and emits MailboxCreated.
func (a *applier) newMailbox(account uint64, address, name string, use uint8) (mboxRec, error) {
	id, err := a.nextID(metaNextMailbox)
	if err != nil {
		return mboxRec{}, err
	}
	uv, err := a.nextUIDValidity()
	if err != nil {
		return mboxRec{}, err
	}
	mb := mboxRec{
		id:            id,
		account:       account,
		uidValidity:   uv,
		uidNext:       1,
		highestModSeq: a.index,
		recent:        1,
		specialUse:    use,
		created:       a.now,
		name:          name,
	}
	if err := a.putMailbox(&mb); err != nil {
		return mb, err
	}
	if err := a.mboxNames.Put(nameKey(account, name), u64(id)); err != nil {
		return mb, err
	}
	a.emit(MailboxCreated{Index: a.index, Account: address, MailboxID: id, Name: name})
	return mb, nil
}

// destroyMailbox removes a mailbox, its messages and index entries, and
// releases blob references; usage u is reduced (the caller stores it).
func (a *applier) destroyMailbox(mb *mboxRec, address string, u *usageRec) error {
	msgs, err := a.loadMessages(mb.id, nil)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := a.removeMessage(mb, m, u); err != nil {
			return err
		}
	}
	if err := a.mailboxes.Delete(u64(mb.id)); err != nil {
		return err
	}
	if err := a.mboxNames.Delete(nameKey(mb.account, mb.name)); err != nil {
		return err
	}
	a.emit(MailboxDeleted{Index: a.index, Account: address, MailboxID: mb.id, Name: mb.name})
	return nil
}

func (a *applier) setSubscription(account uint64, name string, on bool) error {
	if on {
		return a.subs.Put(nameKey(account, name), nil)
	}
	return a.subs.Delete(nameKey(account, name))
}

func (a *applier) isSubscribed(account uint64, name string) bool {
	return hasKey(a.subs, nameKey(account, name))
}

// hasKey reports whether key is present in b. Set-like buckets store nil
// values, and inside the transaction that put them bbolt's Get returns that
// nil (only a committed page gives an empty non-nil slice), so "Get != nil"
// would miss a key written earlier in the same batch.
func hasKey(b *bolt.Bucket, key []byte) bool {
	k, _ := b.Cursor().Seek(key)
	return k != nil && bytes.Equal(k, key)
}

// internalDate splits a command's internal date into stored parts; a zero
// date means the proposal time, in UTC.
func internalDate(t time.Time, now int64) (nanos int64, zone int32) {
	if t.IsZero() {
		return now, 0
	}
	_, off := t.Zone()
	return t.UnixNano(), int32(off)
}
