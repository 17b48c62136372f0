package state

import (
	"bytes"
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Users' Sieve scripts (RFC 5228, managed over ManageSieve, RFC 5804) and
// the record of vacation replies sent (RFC 5230), per account. They live
// here so that every node filters with the same rules and the "one reply
// per sender per :days" rule holds whichever node takes the next message.
//
// The script commands are addressing kinds: a script decides where a
// recipient's mail goes, just as forwarding does, so delivery's scoped
// read barrier (ScopeAddressing) covers a script changed a moment ago
// through another node, without a full barrier per recipient. Scripts
// change rarely, so the scope moves rarely. VacationSent is mail-only.

// Buckets, created by the first command that writes them (files made
// before they existed have none: reads treat a missing bucket as empty).
var (
	bktSieveScripts = []byte("sieve_scripts")  // account ID | name → 0x01 | script text
	bktSieveActive  = []byte("sieve_active")   // account ID → name of the active script
	bktVacation     = []byte("sieve_vacation") // account ID | sender 0x00 handle → sent at i64 (unix nanos)
)

// Limits on what an account may store. They bound every node's state.
const (
	// MaxSieveScripts is the most scripts an account keeps.
	MaxSieveScripts = 10
	// MaxSieveScriptSize is the largest script (bytes).
	MaxSieveScriptSize = 64 << 10
	// MaxSieveBytes is the most script bytes an account keeps in all.
	MaxSieveBytes = 256 << 10
	// MaxSieveNameLen is the longest script name (characters; RFC 5804
	// §1.6 asks servers to take at least 128 octets).
	MaxSieveNameLen = 128
	// MaxVacationRecords is the most vacation records an account keeps;
	// at the limit the oldest goes (that sender may get a second reply
	// early).
	MaxVacationRecords = 2000
	// VacationRetention is how long a vacation record is kept: the
	// longest :days a script may ask for (sieve.MaxVacationDays).
	VacationRetention = 90 * 24 * time.Hour
	// maxVacationField bounds a vacation record's sender and handle.
	maxVacationField = 512
)

// SieveScript is one stored script. Lists leave Content empty.
type SieveScript struct {
	Name    string
	Active  bool
	Size    int // bytes of Content
	Content string
}

// PutSieveScript stores a script under Name, replacing one of that name
// (an active script stays active). Refusals: ErrNoSuchAccount,
// ErrInvalidScriptName, ErrInvalidArgument (not UTF-8),
// ErrScriptLimit (too large, too many, too many bytes in all). Result: Done.
type PutSieveScript struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Name    string `json:"name"`
	Content string `json:"content"`
}

// DeleteSieveScript removes a script. Refusals: ErrNoSuchAccount,
// ErrNoSuchScript, ErrScriptActive (deactivate it first, RFC 5804 §2.10).
// Result: Done.
type DeleteSieveScript struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Name    string `json:"name"`
}

// RenameSieveScript renames a script; the active one stays active under
// its new name. Renaming to the same name changes nothing. Refusals:
// ErrNoSuchAccount, ErrNoSuchScript, ErrScriptExists, ErrInvalidScriptName.
// Result: Done.
type RenameSieveScript struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	OldName string `json:"old"`
	NewName string `json:"new"`
}

// SetActiveSieveScript makes Name the account's one active script; ""
// deactivates whichever is active. Refusals: ErrNoSuchAccount,
// ErrNoSuchScript. Result: Done.
type SetActiveSieveScript struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Name    string `json:"name,omitempty"`
}

// VacationSent records that a vacation reply of Handle went to Sender at
// Time. With Days > 0 it is a claim: when a reply of Handle went to
// Sender within Days before Time, nothing is written and the command is
// refused with ErrVacationNotDue, so two nodes taking messages from one
// sender at once send one reply. It also forgets the account's records
// older than VacationRetention, and the oldest one when the account has
// MaxVacationRecords. Refusals: ErrNoSuchAccount, ErrInvalidArgument,
// ErrVacationNotDue. Result: Done.
type VacationSent struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Sender  string `json:"sender"`
	Handle  string `json:"handle"`
	Days    int    `json:"days,omitempty"`
}

// ValidSieveName reports whether name may name a script: 1 to
// MaxSieveNameLen characters of UTF-8 without control characters or line
// and paragraph separators (RFC 5804 §1.6).
func ValidSieveName(name string) bool {
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxSieveNameLen {
		return false
	}
	for _, c := range name {
		if c < 0x20 || c >= 0x7f && c <= 0x9f || c == 0x2028 || c == 0x2029 {
			return false
		}
	}
	return true
}

func scriptKey(account uint64, name string) []byte { return nameKey(account, name) }

func vacationKey(account uint64, sender, handle string) []byte {
	k := nameKey(account, sender)
	k = append(k, 0)
	return append(k, handle...)
}

// sieveBucket returns a bucket of the sieve family for writing.
func (a *applier) sieveBucket(name []byte) (*bolt.Bucket, error) {
	return a.tx.CreateBucketIfNotExists(name)
}

func (a *applier) putSieveScript(c *PutSieveScript) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	if !ValidSieveName(c.Name) {
		return nil, ErrInvalidScriptName
	}
	if !utf8.ValidString(c.Content) {
		return nil, ErrInvalidArgument
	}
	if len(c.Content) > MaxSieveScriptSize {
		return nil, ErrScriptLimit
	}
	count, total, replaced := 0, len(c.Content), false
	if b := a.tx.Bucket(bktSieveScripts); b != nil {
		prefix := u64(rec.ID)
		cur := b.Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			if string(k[8:]) == c.Name {
				replaced = true
				continue
			}
			count++
			total += len(v) - 1
		}
	}
	if !replaced && count >= MaxSieveScripts || total > MaxSieveBytes {
		return nil, ErrScriptLimit
	}
	b, err := a.sieveBucket(bktSieveScripts)
	if err != nil {
		return nil, err
	}
	v := make([]byte, 0, 1+len(c.Content))
	v = append(v, recordV1)
	return Done{}, b.Put(scriptKey(rec.ID, c.Name), append(v, c.Content...))
}

func (a *applier) deleteSieveScript(c *DeleteSieveScript) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	b := a.tx.Bucket(bktSieveScripts)
	if b == nil || b.Get(scriptKey(rec.ID, c.Name)) == nil {
		return nil, ErrNoSuchScript
	}
	if activeScript(a.tx, rec.ID) == c.Name {
		return nil, ErrScriptActive
	}
	return Done{}, b.Delete(scriptKey(rec.ID, c.Name))
}

func (a *applier) renameSieveScript(c *RenameSieveScript) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	b := a.tx.Bucket(bktSieveScripts)
	var v []byte
	if b != nil {
		v = b.Get(scriptKey(rec.ID, c.OldName))
	}
	if v == nil {
		return nil, ErrNoSuchScript
	}
	if c.NewName == c.OldName {
		return Done{}, nil
	}
	if !ValidSieveName(c.NewName) {
		return nil, ErrInvalidScriptName
	}
	if b.Get(scriptKey(rec.ID, c.NewName)) != nil {
		return nil, ErrScriptExists
	}
	v = bytes.Clone(v)
	if err := b.Put(scriptKey(rec.ID, c.NewName), v); err != nil {
		return nil, err
	}
	if err := b.Delete(scriptKey(rec.ID, c.OldName)); err != nil {
		return nil, err
	}
	if activeScript(a.tx, rec.ID) == c.OldName {
		return Done{}, a.tx.Bucket(bktSieveActive).Put(u64(rec.ID), []byte(c.NewName))
	}
	return Done{}, nil
}

func (a *applier) setActiveSieveScript(c *SetActiveSieveScript) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	if c.Name == "" {
		if ab := a.tx.Bucket(bktSieveActive); ab != nil {
			return Done{}, ab.Delete(u64(rec.ID))
		}
		return Done{}, nil
	}
	b := a.tx.Bucket(bktSieveScripts)
	if b == nil || b.Get(scriptKey(rec.ID, c.Name)) == nil {
		return nil, ErrNoSuchScript
	}
	ab, err := a.sieveBucket(bktSieveActive)
	if err != nil {
		return nil, err
	}
	return Done{}, ab.Put(u64(rec.ID), []byte(c.Name))
}

func validVacationField(s string) bool {
	if s == "" || len(s) > maxVacationField || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func (a *applier) vacationSent(c *VacationSent) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	sender := strings.ToLower(c.Sender)
	if !validVacationField(sender) || !validVacationField(c.Handle) || c.Days < 0 {
		return nil, ErrInvalidArgument
	}
	key := vacationKey(rec.ID, sender, c.Handle)
	if c.Days > 0 {
		if b := a.tx.Bucket(bktVacation); b != nil {
			if v := b.Get(key); len(v) == 8 {
				since := c.Time - int64(c.Days)*int64(24*time.Hour)
				if int64(binary.BigEndian.Uint64(v)) > since {
					return nil, ErrVacationNotDue
				}
			}
		}
	}
	b, err := a.sieveBucket(bktVacation)
	if err != nil {
		return nil, err
	}
	// Forget expired records, and the oldest at the limit (a scan of this
	// account's records: replies are rare next to deliveries).
	cutoff := c.Time - int64(VacationRetention)
	prefix := u64(rec.ID)
	var expired [][]byte
	var oldest []byte
	oldestAt, live := int64(0), 0
	cur := b.Cursor()
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		if bytes.Equal(k, key) {
			continue // rewritten below
		}
		at := int64(0)
		if len(v) == 8 {
			at = int64(binary.BigEndian.Uint64(v))
		}
		if at <= cutoff {
			expired = append(expired, bytes.Clone(k))
			continue
		}
		live++
		if oldest == nil || at < oldestAt {
			oldest, oldestAt = bytes.Clone(k), at
		}
	}
	if live >= MaxVacationRecords && oldest != nil {
		expired = append(expired, oldest)
	}
	if err := deleteKeys(b, expired); err != nil {
		return nil, err
	}
	return Done{}, b.Put(key, u64(uint64(c.Time)))
}

// deleteSieve forgets a deleted account's scripts and vacation records.
func (a *applier) deleteSieve(account uint64) error {
	prefix := u64(account)
	for _, name := range [][]byte{bktSieveScripts, bktVacation} {
		if b := a.tx.Bucket(name); b != nil {
			keys, _ := keysWithPrefix(b, prefix)
			if err := deleteKeys(b, keys); err != nil {
				return err
			}
		}
	}
	if b := a.tx.Bucket(bktSieveActive); b != nil {
		return b.Delete(prefix)
	}
	return nil
}

func activeScript(tx *bolt.Tx, account uint64) string {
	if b := tx.Bucket(bktSieveActive); b != nil {
		return string(b.Get(u64(account)))
	}
	return ""
}

// --- reads ----------------------------------------------------------------

// SieveScripts lists an account's scripts by name (byte order), without
// their content.
func (t *Tx) SieveScripts(account string) ([]SieveScript, error) {
	id, err := t.accountID(account)
	if err != nil {
		return nil, err
	}
	active := activeScript(t.tx, id)
	var out []SieveScript
	if b := t.bucket(bktSieveScripts); b != nil {
		prefix := u64(id)
		cur := b.Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			if len(v) < 1 || v[0] != recordV1 {
				return nil, errCorrupt
			}
			name := string(k[8:])
			out = append(out, SieveScript{Name: name, Active: name == active, Size: len(v) - 1})
		}
	}
	return out, nil
}

// SieveScript returns one script with its content (ErrNoSuchScript).
func (t *Tx) SieveScript(account, name string) (SieveScript, error) {
	id, err := t.accountID(account)
	if err != nil {
		return SieveScript{}, err
	}
	return t.sieveScript(id, name)
}

func (t *Tx) sieveScript(id uint64, name string) (SieveScript, error) {
	b := t.bucket(bktSieveScripts)
	if b == nil {
		return SieveScript{}, ErrNoSuchScript
	}
	v := b.Get(scriptKey(id, name))
	if v == nil {
		return SieveScript{}, ErrNoSuchScript
	}
	if v[0] != recordV1 {
		return SieveScript{}, errCorrupt
	}
	return SieveScript{Name: name, Active: activeScript(t.tx, id) == name, Size: len(v) - 1, Content: string(v[1:])}, nil
}

// ActiveSieveScript returns the account's active script, if it has one.
func (t *Tx) ActiveSieveScript(account string) (SieveScript, bool, error) {
	id, err := t.accountID(account)
	if err != nil {
		return SieveScript{}, false, err
	}
	name := activeScript(t.tx, id)
	if name == "" {
		return SieveScript{}, false, nil
	}
	s, err := t.sieveScript(id, name)
	if err != nil {
		return SieveScript{}, false, errCorrupt // the active name always names a script
	}
	return s, true, nil
}

// VacationSentAt returns when a vacation reply of handle last went from
// account to sender (unix nanos), if one is recorded. Records older than
// VacationRetention may have been forgotten.
func (t *Tx) VacationSentAt(account, sender, handle string) (int64, bool, error) {
	id, err := t.accountID(account)
	if err != nil {
		return 0, false, err
	}
	b := t.bucket(bktVacation)
	if b == nil {
		return 0, false, nil
	}
	v := b.Get(vacationKey(id, strings.ToLower(sender), handle))
	if len(v) != 8 {
		return 0, false, nil
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}
