package state

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Greylisting remembers, for every node alike, when a (client network,
// sender, recipient) triplet was first seen and when it last got through,
// so a sender retrying through another MX node is not greylisted again.
// The triplet is hashed by the caller: the state keeps no addresses.

// bktGreylist holds triplet hash (16 bytes) → first seen i64 | passed i64
// (0: never passed). Created by the first GreylistSeen.
var bktGreylist = []byte("greylist")

// metaGreylistCursor is where the last prune stopped (a triplet hash).
var metaGreylistCursor = []byte("greylist_cursor")

// greylistPrunePerEntry bounds the entries one GreylistSeen looks at for
// pruning, so one command's cost stays small and constant.
const greylistPrunePerEntry = 8

// GreylistSeen records that a triplet was seen (Pass false: at its first
// attempt, or at the first after its entry expired) or got through (Pass
// true). An entry older than MaxAge (unix nanos of age; by first seen if
// it never passed, by its last pass otherwise) counts as absent, and a few
// such entries are deleted by each command. Refusals: ErrInvalidArgument
// (a key that is not 16 bytes). Result: Done.
type GreylistSeen struct {
	command
	Time   int64
	Key    []byte
	Pass   bool
	MaxAge int64
}

// GreylistEntry is one triplet's record.
type GreylistEntry struct {
	First  int64 // unix nanos, first seen
	Passed int64 // unix nanos, last got through; 0: never
}

func (e GreylistEntry) expired(now, maxAge int64) bool {
	last := e.First
	if e.Passed != 0 {
		last = e.Passed
	}
	return maxAge > 0 && now-last > maxAge
}

func decodeGreylist(v []byte) (GreylistEntry, bool) {
	if len(v) != 16 {
		return GreylistEntry{}, false
	}
	return GreylistEntry{First: int64(binary.BigEndian.Uint64(v)), Passed: int64(binary.BigEndian.Uint64(v[8:]))}, true
}

func (e GreylistEntry) encode() []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, uint64(e.First))
	binary.BigEndian.PutUint64(v[8:], uint64(e.Passed))
	return v
}

func (a *applier) greylistSeen(c *GreylistSeen) (Result, error) {
	if len(c.Key) != 16 {
		return nil, ErrInvalidArgument
	}
	b, err := a.tx.CreateBucketIfNotExists(bktGreylist)
	if err != nil {
		return nil, err
	}
	e, ok := decodeGreylist(b.Get(c.Key))
	if !ok || e.expired(c.Time, c.MaxAge) {
		e = GreylistEntry{First: c.Time}
	}
	if c.Pass {
		e.Passed = c.Time
	}
	if err := b.Put(c.Key, e.encode()); err != nil {
		return nil, err
	}
	return Done{}, a.pruneGreylist(b, c)
}

// pruneGreylist deletes expired entries among the next few after the
// cursor, wrapping around, so the bucket never holds more than what was
// seen within MaxAge plus a little.
func (a *applier) pruneGreylist(b *bolt.Bucket, c *GreylistSeen) error {
	if c.MaxAge <= 0 {
		return nil
	}
	cur := b.Cursor()
	start := bytes.Clone(a.meta.Get(metaGreylistCursor))
	var k, v []byte
	wrapped := start == nil
	if wrapped {
		k, v = cur.First()
	} else if k, v = cur.Seek(start); k != nil && bytes.Equal(k, start) {
		k, v = cur.Next()
	}
	var last []byte
	var stale [][]byte
	for n := 0; n < greylistPrunePerEntry; n++ {
		if k == nil {
			if wrapped {
				break
			}
			k, v = cur.First()
			wrapped = true
		}
		if last != nil && bytes.Equal(k, start) {
			break // all the way round
		}
		if e, ok := decodeGreylist(v); !ok || e.expired(c.Time, c.MaxAge) {
			if !bytes.Equal(k, c.Key) {
				stale = append(stale, bytes.Clone(k))
			}
		}
		last = bytes.Clone(k)
		k, v = cur.Next()
	}
	for _, s := range stale {
		if err := b.Delete(s); err != nil {
			return err
		}
	}
	if last == nil {
		return nil
	}
	return a.meta.Put(metaGreylistCursor, last)
}

// Greylist returns a triplet's entry; ok is false if there is none or it
// is older than maxAge at now.
func (t *Tx) Greylist(key []byte, now, maxAge int64) (GreylistEntry, bool) {
	b := t.bucket(bktGreylist)
	if b == nil {
		return GreylistEntry{}, false
	}
	e, ok := decodeGreylist(b.Get(key))
	if !ok || e.expired(now, maxAge) {
		return GreylistEntry{}, false
	}
	return e, true
}
