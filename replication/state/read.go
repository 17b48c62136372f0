package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tx is one consistent read of the state, valid only inside View's
// callback. Everything it returns is a copy that outlives the transaction.
type Tx struct {
	tx *bolt.Tx
}

// Domain is a local domain.
type Domain struct {
	Name     string
	Created  time.Time
	CatchAll string // "" for none
}

// Account is an account's settings and usage.
type Account struct {
	ID            uint64
	Address       string
	PasswordHash  string
	QuotaBytes    int64 // 0 = unlimited
	QuotaMessages int64 // 0 = unlimited
	Disabled      bool
	Forward       []string
	KeepLocal     bool
	Created       time.Time
	UsedBytes     int64
	UsedMessages  int64
}

// Alias maps an address to targets.
type Alias struct {
	Address string
	Targets []string
	Created time.Time
}

// Mailbox is a mailbox's status: everything SELECT and STATUS need.
type Mailbox struct {
	ID            uint64
	Account       string
	Name          string
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	SpecialUse    SpecialUse
	Subscribed    bool
	Messages      uint32
	Unseen        uint32
	Deleted       uint32
	Size          int64
	// RecentWatermark: UIDs at or above it have not been claimed by any
	// session (see ClaimRecent).
	RecentWatermark uint32
	Created         time.Time
}

// Message is one message record.
type Message struct {
	UID          uint32
	ModSeq       uint64
	Flags        Flags
	Blob         BlobID
	Size         int64
	InternalDate time.Time
}

// Blob is a blob's record. Summary is nil from ForEachBlob.
type Blob struct {
	ID        BlobID
	Refs      uint64
	Size      int64
	ZeroSince int64 // unix nanos when Refs reached 0; 0 while referenced
	Summary   []byte
}

// Quota is an account's usage and limits (0 = unlimited).
type Quota struct {
	UsedBytes     int64
	UsedMessages  int64
	LimitBytes    int64
	LimitMessages int64
}

// Resolution is where mail for an address goes.
type Resolution struct {
	Accounts []string // local accounts to store a copy in
	External []string // addresses outside the local domains, to relay to
}

// MaxResolveDepth bounds alias, catch-all and forwarding chains.
const MaxResolveDepth = 8

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

// AppliedIndex is the applied index as of this read.
func (t *Tx) AppliedIndex() uint64 {
	index, _ := readApplied(t.tx)
	return index
}

// Domain returns one local domain (ErrNoSuchDomain).
func (t *Tx) Domain(name string) (Domain, error) {
	d, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, ErrNoSuchDomain
	}
	v := t.bucket(bktDomains).Get([]byte(d))
	if v == nil {
		return Domain{}, ErrNoSuchDomain
	}
	return decodeDomain(d, v)
}

func decodeDomain(name string, v []byte) (Domain, error) {
	var rec domainRec
	if err := decodeJSONRecord(v, &rec); err != nil {
		return Domain{}, err
	}
	return Domain{Name: name, Created: time.Unix(0, rec.Created).UTC(), CatchAll: rec.CatchAll}, nil
}

// Domains lists the local domains by name.
func (t *Tx) Domains() ([]Domain, error) {
	var out []Domain
	err := t.bucket(bktDomains).ForEach(func(k, v []byte) error {
		d, err := decodeDomain(string(k), v)
		out = append(out, d)
		return err
	})
	return out, err
}

// Account returns one account (ErrNoSuchAccount).
func (t *Tx) Account(address string) (Account, error) {
	addr, err := NormalizeAddress(address)
	if err != nil {
		return Account{}, ErrNoSuchAccount
	}
	rec, err := getAccount(t.bucket(bktAccounts), addr)
	if err != nil {
		return Account{}, err
	}
	return t.accountView(rec)
}

func (t *Tx) accountView(rec accountRec) (Account, error) {
	v := t.bucket(bktUsage).Get(u64(rec.ID))
	u, err := decodeUsage(v)
	if err != nil {
		return Account{}, err
	}
	return Account{
		ID:            rec.ID,
		Address:       rec.Address,
		PasswordHash:  rec.PasswordHash,
		QuotaBytes:    rec.QuotaBytes,
		QuotaMessages: rec.QuotaMessages,
		Disabled:      rec.Disabled,
		Forward:       rec.Forward,
		KeepLocal:     rec.KeepLocal,
		Created:       time.Unix(0, rec.Created).UTC(),
		UsedBytes:     int64(u.bytes),
		UsedMessages:  int64(u.messages),
	}, nil
}

// Accounts lists a domain's accounts by address (an empty domain: all).
func (t *Tx) Accounts(domain string) ([]Account, error) {
	var out []Account
	if domain == "" {
		err := t.bucket(bktAccounts).ForEach(func(_, v []byte) error {
			var rec accountRec
			if err := decodeJSONRecord(v, &rec); err != nil {
				return err
			}
			a, err := t.accountView(rec)
			out = append(out, a)
			return err
		})
		return out, err
	}
	addrs, err := t.domainMembers(domain, kindAccount)
	if err != nil {
		return nil, err
	}
	for _, addr := range addrs {
		a, err := t.Account(addr)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (t *Tx) domainMembers(domain string, kind byte) ([]string, error) {
	d, err := NormalizeDomain(domain)
	if err != nil || t.bucket(bktDomains).Get([]byte(d)) == nil {
		return nil, ErrNoSuchDomain
	}
	prefix := byDomainPrefix(d, kind)
	var out []string
	c := t.bucket(bktByDomain).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out, nil
}

// Alias returns one alias (ErrNoSuchAlias).
func (t *Tx) Alias(address string) (Alias, error) {
	addr, err := NormalizeAddress(address)
	if err != nil {
		return Alias{}, ErrNoSuchAlias
	}
	v := t.bucket(bktAliases).Get([]byte(addr))
	if v == nil {
		return Alias{}, ErrNoSuchAlias
	}
	return aliasView(addr, v)
}

func aliasView(addr string, v []byte) (Alias, error) {
	var rec aliasRec
	if err := decodeJSONRecord(v, &rec); err != nil {
		return Alias{}, err
	}
	return Alias{Address: addr, Targets: rec.Targets, Created: time.Unix(0, rec.Created).UTC()}, nil
}

// Aliases lists a domain's aliases by address (an empty domain: all).
func (t *Tx) Aliases(domain string) ([]Alias, error) {
	if domain == "" {
		var out []Alias
		err := t.bucket(bktAliases).ForEach(func(k, v []byte) error {
			a, err := aliasView(string(k), v)
			out = append(out, a)
			return err
		})
		return out, err
	}
	addrs, err := t.domainMembers(domain, kindAlias)
	if err != nil {
		return nil, err
	}
	out := make([]Alias, 0, len(addrs))
	for _, addr := range addrs {
		a, err := t.Alias(addr)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Resolve says where mail for address goes. Rules, in order: an account
// with that address; an alias; the address without its +tag
// (user+tag@domain → user@domain, account or alias); the domain's
// catch-all. Alias and catch-all targets resolve the same way, up to
// MaxResolveDepth; an account with forwarding adds its (resolved) targets
// and keeps a local copy only with KeepLocal. A loop or a chain too deep
// ends at the last account met (mail is kept rather than lost). Disabled
// accounts are included; Deliver refuses them per target.
//
// ErrInvalidAddress for a malformed address, ErrNoSuchDomain if its domain
// is not local, ErrNoSuchAccount if nothing local matches.
func (t *Tx) Resolve(address string) (Resolution, error) {
	addr, err := NormalizeAddress(address)
	if err != nil {
		return Resolution{}, err
	}
	if t.bucket(bktDomains).Get([]byte(domainOf(addr))) == nil {
		return Resolution{}, ErrNoSuchDomain
	}
	r := resolver{tx: t, onPath: map[string]bool{}, emitted: map[string]bool{}}
	found, err := r.expand(addr, 0)
	if err != nil {
		return Resolution{}, err
	}
	if !found {
		return Resolution{}, ErrNoSuchAccount
	}
	return r.out, nil
}

type resolver struct {
	tx      *Tx
	onPath  map[string]bool // addresses being expanded (loop detection); lookups only
	emitted map[string]bool // addresses already in out; lookups only
	out     Resolution
}

func (r *resolver) addLocal(addr string) {
	if !r.emitted[addr] {
		r.emitted[addr] = true
		r.out.Accounts = append(r.out.Accounts, addr)
	}
}

func (r *resolver) addExternal(addr string) {
	if !r.emitted[addr] {
		r.emitted[addr] = true
		r.out.External = append(r.out.External, addr)
	}
}

// expand resolves addr and reports whether anything matched.
func (r *resolver) expand(addr string, depth int) (bool, error) {
	domain := domainOf(addr)
	dv := r.tx.bucket(bktDomains).Get([]byte(domain))
	if dv == nil {
		r.addExternal(addr)
		return true, nil
	}
	if r.onPath[addr] {
		// A loop: an account on the path keeps its copy; an alias adds nothing.
		if r.tx.bucket(bktAccounts).Get([]byte(addr)) != nil {
			r.addLocal(addr)
			return true, nil
		}
		return false, nil
	}
	r.onPath[addr] = true
	defer delete(r.onPath, addr)

	if matched, err := r.expandExact(addr, depth); matched || err != nil {
		return matched, err
	}
	local := addr[:len(addr)-len(domain)-1]
	if i := strings.IndexByte(local, '+'); i > 0 {
		base := local[:i] + "@" + domain
		if !r.onPath[base] {
			r.onPath[base] = true
			matched, err := r.expandExact(base, depth)
			delete(r.onPath, base)
			if matched || err != nil {
				return matched, err
			}
		}
	}
	dom, err := decodeDomain(domain, dv)
	if err != nil {
		return false, err
	}
	if dom.CatchAll != "" && depth < MaxResolveDepth {
		return r.expand(dom.CatchAll, depth+1)
	}
	return false, nil
}

// expandExact resolves addr as an account or an alias, not by +tag or
// catch-all.
func (r *resolver) expandExact(addr string, depth int) (bool, error) {
	rec, err := getAccount(r.tx.bucket(bktAccounts), addr)
	switch {
	case err == nil:
		if len(rec.Forward) == 0 || depth >= MaxResolveDepth {
			r.addLocal(addr)
			return true, nil
		}
		if rec.KeepLocal {
			r.addLocal(addr)
		}
		delivered := rec.KeepLocal
		for _, target := range rec.Forward {
			ok, err := r.expand(target, depth+1)
			if err != nil {
				return true, err
			}
			delivered = delivered || ok
		}
		if !delivered {
			r.addLocal(addr) // every forward target vanished: keep the mail
		}
		return true, nil
	case !errors.Is(err, ErrNoSuchAccount):
		return false, err
	}
	v := r.tx.bucket(bktAliases).Get([]byte(addr))
	if v == nil || depth >= MaxResolveDepth {
		return false, nil
	}
	var alias aliasRec
	if err := decodeJSONRecord(v, &alias); err != nil {
		return false, err
	}
	matched := false
	for _, target := range alias.Targets {
		ok, err := r.expand(target, depth+1)
		if err != nil {
			return false, err
		}
		matched = matched || ok
	}
	return matched, nil
}

// accountID finds an account's ID (ErrNoSuchAccount).
func (t *Tx) accountID(address string) (uint64, error) {
	addr, err := NormalizeAddress(address)
	if err != nil {
		return 0, ErrNoSuchAccount
	}
	rec, err := getAccount(t.bucket(bktAccounts), addr)
	return rec.ID, err
}

func (t *Tx) mailboxView(v []byte) (Mailbox, error) {
	mb, err := decodeMbox(v)
	if err != nil {
		return Mailbox{}, err
	}
	addr := t.bucket(bktAccountIDs).Get(u64(mb.account))
	return Mailbox{
		ID:              mb.id,
		Account:         string(addr),
		Name:            mb.name,
		UIDValidity:     mb.uidValidity,
		UIDNext:         mb.uidNext,
		HighestModSeq:   mb.highestModSeq,
		SpecialUse:      specialUseOf(mb.specialUse),
		Subscribed:      hasKey(t.bucket(bktSubs), nameKey(mb.account, mb.name)),
		Messages:        mb.messages,
		Unseen:          mb.unseen,
		Deleted:         mb.deleted,
		Size:            int64(mb.size),
		RecentWatermark: mb.recent,
		Created:         time.Unix(0, mb.created).UTC(),
	}, nil
}

// Mailboxes lists an account's mailboxes in name order (byte order, so a
// parent comes right before its children).
func (t *Tx) Mailboxes(account string) ([]Mailbox, error) {
	id, err := t.accountID(account)
	if err != nil {
		return nil, err
	}
	var out []Mailbox
	prefix := u64(id)
	mboxes := t.bucket(bktMailboxes)
	c := t.bucket(bktMboxNames).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rec := mboxes.Get(v)
		if rec == nil {
			return nil, errCorrupt
		}
		mb, err := t.mailboxView(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, mb)
	}
	return out, nil
}

// Mailbox finds a mailbox by name (ErrNoSuchMailbox).
func (t *Tx) Mailbox(account, name string) (Mailbox, error) {
	id, err := t.accountID(account)
	if err != nil {
		return Mailbox{}, err
	}
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return Mailbox{}, ErrNoSuchMailbox
	}
	v := t.bucket(bktMboxNames).Get(nameKey(id, n))
	if v == nil {
		return Mailbox{}, ErrNoSuchMailbox
	}
	return t.MailboxByID(bytesToU64(v))
}

// MailboxByID finds a mailbox by ID (ErrNoSuchMailbox). IDs are never
// reused, so a stale ID never finds another mailbox.
func (t *Tx) MailboxByID(id uint64) (Mailbox, error) {
	v := t.bucket(bktMailboxes).Get(u64(id))
	if v == nil {
		return Mailbox{}, ErrNoSuchMailbox
	}
	return t.mailboxView(v)
}

// Subscriptions lists the subscribed names in byte order; they may name
// mailboxes that do not exist.
func (t *Tx) Subscriptions(account string) ([]string, error) {
	id, err := t.accountID(account)
	if err != nil {
		return nil, err
	}
	var out []string
	prefix := u64(id)
	c := t.bucket(bktSubs).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[8:]))
	}
	return out, nil
}

func (t *Tx) mailboxExists(id uint64) error {
	if t.bucket(bktMailboxes).Get(u64(id)) == nil {
		return ErrNoSuchMailbox
	}
	return nil
}

// UIDs lists a mailbox's UIDs in order (the sequence-number map), from a
// key-only scan.
func (t *Tx) UIDs(mailboxID uint64) ([]uint32, error) {
	mb, err := t.MailboxByID(mailboxID)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, mb.Messages)
	err = scanUIDs(t.bucket(bktMessages), u64(mailboxID), nil, func(uid uint32, _ []byte) error {
		out = append(out, uid)
		return nil
	})
	return out, err
}

// Messages streams the messages with uidFrom ≤ UID ≤ uidTo in UID order.
func (t *Tx) Messages(mailboxID uint64, uidFrom, uidTo uint32, fn func(Message) error) error {
	if err := t.mailboxExists(mailboxID); err != nil {
		return err
	}
	return scanUIDs(t.bucket(bktMessages), u64(mailboxID), UIDSet{{uidFrom, uidTo}}, func(_ uint32, v []byte) error {
		m, err := decodeMsg(v)
		if err != nil {
			return err
		}
		return fn(messageView(&m))
	})
}

func messageView(m *msgRec) Message {
	return Message{UID: m.uid, ModSeq: m.modseq, Flags: m.flags, Blob: m.blob, Size: int64(m.size), InternalDate: m.internalDate()}
}

// Message returns one message (ErrNoSuchMailbox, ErrNoSuchMessage).
func (t *Tx) Message(mailboxID uint64, uid uint32) (Message, error) {
	if err := t.mailboxExists(mailboxID); err != nil {
		return Message{}, err
	}
	v := t.bucket(bktMessages).Get(msgKey(mailboxID, uid))
	if v == nil {
		return Message{}, ErrNoSuchMessage
	}
	m, err := decodeMsg(v)
	if err != nil {
		return Message{}, err
	}
	return messageView(&m), nil
}

// Flags streams only UID, flags and MODSEQ for uidFrom ≤ UID ≤ uidTo: the
// cheap path for FETCH FLAGS over a large mailbox.
func (t *Tx) Flags(mailboxID uint64, uidFrom, uidTo uint32, fn func(uid uint32, flags Flags, modseq uint64) error) error {
	if err := t.mailboxExists(mailboxID); err != nil {
		return err
	}
	return scanUIDs(t.bucket(bktMessages), u64(mailboxID), UIDSet{{uidFrom, uidTo}}, func(uid uint32, v []byte) error {
		f, err := decodeMsgFlags(v)
		if err != nil {
			return err
		}
		return fn(uid, f, msgModSeq(v))
	})
}

// UIDsWithFlag lists, from the flag index, the UIDs in one indexed class.
func (t *Tx) UIDsWithFlag(mailboxID uint64, f IndexedFlag) ([]uint32, error) {
	if err := t.mailboxExists(mailboxID); err != nil {
		return nil, err
	}
	var out []uint32
	err := scanUIDs(t.bucket(bktFlagIndex), flagPrefix(mailboxID, f), nil, func(uid uint32, _ []byte) error {
		out = append(out, uid)
		return nil
	})
	return out, err
}

// Unseen lists the UIDs without \Seen.
func (t *Tx) Unseen(mailboxID uint64) ([]uint32, error) {
	return t.UIDsWithFlag(mailboxID, IndexUnseen)
}

// Deleted lists the UIDs with \Deleted.
func (t *Tx) Deleted(mailboxID uint64) ([]uint32, error) {
	return t.UIDsWithFlag(mailboxID, IndexDeleted)
}

// FirstUnseen is the lowest UID without \Seen, or 0 (SELECT's UNSEEN).
func (t *Tx) FirstUnseen(mailboxID uint64) (uint32, error) {
	if err := t.mailboxExists(mailboxID); err != nil {
		return 0, err
	}
	prefix := flagPrefix(mailboxID, IndexUnseen)
	k, _ := t.bucket(bktFlagIndex).Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+4 {
		return 0, nil
	}
	return binary.BigEndian.Uint32(k[len(prefix):]), nil
}

// Blob returns a blob's record with its summary (ErrNoSuchBlob).
func (t *Tx) Blob(id BlobID) (Blob, error) {
	v := t.bucket(bktBlobs).Get(id[:])
	if v == nil {
		return Blob{}, ErrNoSuchBlob
	}
	rec, err := decodeBlob(v)
	if err != nil {
		return Blob{}, err
	}
	return Blob{
		ID:        id,
		Refs:      rec.refs,
		Size:      int64(rec.size),
		ZeroSince: rec.zeroSince,
		Summary:   bytes.Clone(t.bucket(bktSummaries).Get(id[:])),
	}, nil
}

// ForEachBlob calls fn for every blob record in ID order (no summaries):
// for placement, repair and garbage collection.
func (t *Tx) ForEachBlob(fn func(Blob) error) error {
	return t.bucket(bktBlobs).ForEach(func(k, v []byte) error {
		rec, err := decodeBlob(v)
		if err != nil || len(k) != 32 {
			return errCorrupt
		}
		b := Blob{Refs: rec.refs, Size: int64(rec.size), ZeroSince: rec.zeroSince}
		copy(b.ID[:], k)
		return fn(b)
	})
}

// Quota returns an account's usage and limits (ErrNoSuchAccount).
func (t *Tx) Quota(account string) (Quota, error) {
	a, err := t.Account(account)
	if err != nil {
		return Quota{}, err
	}
	return Quota{UsedBytes: a.UsedBytes, UsedMessages: a.UsedMessages, LimitBytes: a.QuotaBytes, LimitMessages: a.QuotaMessages}, nil
}
