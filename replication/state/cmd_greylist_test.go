package state

import (
	"bytes"
	"errors"
	"testing"
)

func TestGreylistSeenAndPassed(t *testing.T) {
	h := newHarness(t)
	key := bytes.Repeat([]byte{1}, 16)
	const minute = int64(60e9)
	const maxAge = 60 * minute
	read := func(now int64) (GreylistEntry, bool) {
		var e GreylistEntry
		var ok bool
		h.view(func(tx *Tx) error { e, ok = tx.Greylist(key, now, maxAge); return nil })
		return e, ok
	}
	if _, ok := read(1); ok {
		t.Fatal("an entry before anything was seen")
	}
	must[Done](h, &GreylistSeen{Time: 10 * minute, Key: key, MaxAge: maxAge})
	if e, ok := read(11 * minute); !ok || e.First != 10*minute || e.Passed != 0 {
		t.Fatalf("after first sight: %+v %v", e, ok)
	}
	// Seen again before it passed: the first sighting stays.
	must[Done](h, &GreylistSeen{Time: 12 * minute, Key: key, MaxAge: maxAge})
	must[Done](h, &GreylistSeen{Time: 20 * minute, Key: key, Pass: true, MaxAge: maxAge})
	if e, ok := read(21 * minute); !ok || e.First != 10*minute || e.Passed != 20*minute {
		t.Fatalf("after passing: %+v %v", e, ok)
	}
	// Expired by its last pass: absent, and seeing it again starts over.
	if _, ok := read(20*minute + maxAge + 1); ok {
		t.Fatal("an expired entry was returned")
	}
	must[Done](h, &GreylistSeen{Time: 200 * minute, Key: key, MaxAge: maxAge})
	if e, ok := read(201 * minute); !ok || e.First != 200*minute || e.Passed != 0 {
		t.Fatalf("after expiry: %+v %v", e, ok)
	}
	if err := h.do(&GreylistSeen{Time: 1, Key: []byte("short"), MaxAge: maxAge}).Err(); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("short key: %v", err)
	}
}

func TestGreylistPrunesExpiredEntries(t *testing.T) {
	h := newHarness(t)
	const maxAge = int64(1000)
	for i := range 40 {
		key := bytes.Repeat([]byte{byte(i + 1)}, 16)
		must[Done](h, &GreylistSeen{Time: 1, Key: key, MaxAge: maxAge})
	}
	count := func() int {
		n := 0
		h.view(func(tx *Tx) error {
			if b := tx.bucket(bktGreylist); b != nil {
				_ = b.ForEach(func(_, _ []byte) error { n++; return nil })
			}
			return nil
		})
		return n
	}
	if n := count(); n != 40 {
		t.Fatalf("%d entries, want 40", n)
	}
	// Long after they expired, a few new sightings sweep the old ones out.
	for i := range 10 {
		key := bytes.Repeat([]byte{byte(200 + i)}, 16)
		must[Done](h, &GreylistSeen{Time: 1 + 10*maxAge, Key: key, MaxAge: maxAge})
	}
	if n := count(); n != 10 {
		t.Fatalf("%d entries after pruning, want the 10 fresh ones", n)
	}
}
