package replication

import (
	"context"
	"time"

	"github.com/mailcluster/mailcluster/replication/state"
)

// Greylist returns what the cluster knows of a greylisting triplet (its
// 16-byte hash): when it was first seen and when it last got through. It
// reads this node's state; when the triplet is unknown here it passes a
// read barrier and looks again, so a sighting recorded through another
// node a moment ago is found.
func (s *Store) Greylist(ctx context.Context, key []byte, maxAge time.Duration) (state.GreylistEntry, bool, error) {
	read := func() (e state.GreylistEntry, ok bool) {
		_ = s.fsm.View(func(tx *state.Tx) error {
			e, ok = tx.Greylist(key, s.now().UnixNano(), int64(maxAge))
			return nil
		})
		return e, ok
	}
	if e, ok := read(); ok {
		return e, true, nil
	}
	if err := s.Barrier(ctx); err != nil {
		return state.GreylistEntry{}, false, err
	}
	e, ok := read()
	return e, ok, nil
}

// RecordGreylist records that a triplet was seen (pass false) or got
// through (pass true); entries older than maxAge are forgotten.
func (s *Store) RecordGreylist(ctx context.Context, key []byte, pass bool, maxAge time.Duration) error {
	_, err := propose[state.Done](ctx, s, state.GreylistSeen{Time: s.now().UnixNano(), Key: key, Pass: pass, MaxAge: int64(maxAge)})
	return err
}
