package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// errNotCaughtUp stops a repair pass on a node whose state is behind.
var errNotCaughtUp = fmt.Errorf("%w: local state is not caught up with the cluster", blob.ErrNotReady)

// References answers the blob layer's "which bodies are referenced"
// questions from the local state. Until ready reports that this node has
// caught up, it claims everything is referenced: a node that came back
// empty, or is still installing a snapshot, must never garbage-collect.
type References struct {
	fsm   *state.FSM
	ready func() bool
}

// NewReferences returns the blob layer's view of the state.
func NewReferences(fsm *state.FSM, ready func() bool) *References {
	return &References{fsm: fsm, ready: ready}
}

var _ blob.References = (*References)(nil)

// ForEachReferenced calls fn for every body some message references.
func (r *References) ForEachReferenced(ctx context.Context, fn func(id blob.ID) error) error {
	if !r.ready() {
		return errNotCaughtUp
	}
	// Collect first: fn talks to peers, and a long-lived read transaction
	// would hold back the state file's page reuse meanwhile.
	var ids []blob.ID
	err := r.fsm.View(func(tx *state.Tx) error {
		return tx.ForEachBlob(func(b state.Blob) error {
			if b.Refs > 0 {
				ids = append(ids, blob.ID(b.ID))
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

// IsReferenced reports whether any message references id; true whenever
// in doubt.
func (r *References) IsReferenced(id blob.ID) bool {
	if !r.ready() {
		return true
	}
	referenced := true
	_ = r.fsm.View(func(tx *state.Tx) error {
		b, err := tx.Blob(state.BlobID(id))
		switch {
		case errors.Is(err, state.ErrNoSuchBlob):
			referenced = false
		case err == nil:
			referenced = b.Refs > 0
		}
		return nil
	})
	return referenced
}

// PurgeLoop forgets blob records whose reference count has been zero for
// longer than grace, so the state does not keep every body ever delivered,
// until ctx ends. The files themselves are removed by each node's GC. It
// is leader work: the node runs it only while it leads.
func (s *Store) PurgeLoop(ctx context.Context, grace, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := propose[state.PurgeResult](pctx, s, state.PurgeBlobs{Time: s.stamp(), Before: s.now().Add(-grace).UnixNano(), Limit: 10_000})
		cancel()
		if err != nil {
			s.log.Debug("purging unreferenced blob records failed", "err", err)
			continue
		}
		if len(res.Blobs) > 0 {
			s.log.Info("forgot unreferenced blob records", "count", len(res.Blobs))
		}
	}
}
