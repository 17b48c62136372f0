package replication

import (
	"context"
	"time"

	"github.com/mailcluster/mailcluster/replication/state"
)

// The outbound queue (see state/queue.go): mail for recipients outside the
// cluster enters it in the delivery's one commit (CommitDeliveryQueued);
// workers on any node claim due entries through Raft, renew their leases
// while an attempt runs, and report each recipient's outcome under the
// claim's token. A claim, renewal or report whose token is stale changes
// nothing. Times on the queue (next attempts, lease expiry) are judged by
// the queue clock, which the leader advances (QueueTick); QueueNow reads it.

// CommitDeliveryQueued is CommitDelivery with recipients outside the
// cluster as well: one command stores the local copies and creates one
// queue entry per remote target, all referencing the ingested body
// (Delivered.Queued lists the entries, in remote's order). The proposer
// fills in each target's Expires and DelayDSNAt from its configuration.
// Like CommitDelivery it does not wait for this node to apply the change.
func (s *Store) CommitDeliveryQueued(ctx context.Context, b Ingested, recipients []Recipient, remote []state.QueueTarget, internalDate time.Time) (Delivered, error) {
	if len(recipients)+len(remote) == 0 || b.Blob.IsZero() {
		return Delivered{}, ErrInvalidArgument
	}
	targets := make([]state.DeliverTarget, len(recipients))
	for i, r := range recipients {
		targets[i] = state.DeliverTarget{Account: r.Account, Mailbox: r.Mailbox, Flags: state.ParseFlags(r.Flags)}
	}
	res, err := proposeWith[state.DeliverResult](ctx, s, state.Deliver{
		Time: s.stamp(), Blob: b.Blob, Size: b.Size, Summary: b.summary,
		InternalDate: internalDate, Targets: targets, Remote: remote,
	}, s.cons.ProposeCommitted)
	if err != nil {
		return Delivered{}, err
	}
	return Delivered{Blob: b.Blob, Size: b.Size, Results: res.Targets, Queued: res.Queued}, nil
}

// QueueTick advances the queue clock to now (it never goes back). Only
// the leader's queue task calls it, with its own clock.
func (s *Store) QueueTick(ctx context.Context, now time.Time) error {
	_, err := propose[state.Done](ctx, s, state.QueueTick{Time: now.UnixNano()})
	return err
}

// QueueClaim leases to node those of ids that are due and not leased, for
// lease (judged by the queue clock). The result's Token (the claim's log
// index) fences every later renewal and report; Granted lists what node
// now holds, possibly nothing. It waits until this node has applied the
// claim, so QueueEntry reads the claimed entries here at once.
func (s *Store) QueueClaim(ctx context.Context, node string, ids []state.QueueID, lease time.Duration) (state.ClaimResult, error) {
	if node == "" || len(ids) == 0 || lease <= 0 {
		return state.ClaimResult{}, ErrInvalidArgument
	}
	return propose[state.ClaimResult](ctx, s, state.QueueClaim{Time: s.stamp(), Node: node, IDs: ids, Lease: int64(lease)})
}

// QueueRenew extends the leases token holds among ids to the queue clock +
// lease and returns the ids it still holds: an attempt must stop for every
// id missing from the answer (another node may have claimed it).
func (s *Store) QueueRenew(ctx context.Context, token uint64, ids []state.QueueID, lease time.Duration) ([]state.QueueID, error) {
	if token == 0 || len(ids) == 0 || lease <= 0 {
		return nil, ErrInvalidArgument
	}
	res, err := propose[state.RenewResult](ctx, s, state.QueueRenew{Time: s.stamp(), Token: token, IDs: ids, Lease: int64(lease)})
	return res.Held, err
}

// QueueReport records the outcomes of attempts made under token, with any
// bounce (already ingested: durable on W) in the same commit. The result
// has one entry per outcome: Err() is ErrStaleLease or
// ErrNoSuchQueueEntry for an outcome that was refused (nothing of it was
// written, its bounce neither), nil otherwise.
func (s *Store) QueueReport(ctx context.Context, token uint64, outcomes []state.QueueOutcome) (state.ReportResult, error) {
	if token == 0 || len(outcomes) == 0 {
		return state.ReportResult{}, ErrInvalidArgument
	}
	return propose[state.ReportResult](ctx, s, state.QueueReport{Time: s.stamp(), Token: token, Outcomes: outcomes})
}

// Bounce turns an ingested DSN into the Bounce of a QueueOutcome (kind
// state.BounceFailed, BounceDelayed or BounceDelivered), to be stored in
// the sender's mailboxes (local) and/or queued to outside addresses
// (remote, with From "").
func (b Ingested) Bounce(kind string, local []Recipient, remote []state.QueueTarget) *state.Bounce {
	out := &state.Bounce{Kind: kind, Blob: b.Blob, Size: b.Size, Summary: b.summary, Remote: remote}
	for _, r := range local {
		out.Local = append(out.Local, state.DeliverTarget{Account: r.Account, Mailbox: r.Mailbox, Flags: state.ParseFlags(r.Flags)})
	}
	return out
}

// QueueAdmin applies an operator's action (state.QueueRetry, QueueBounce,
// QueueDelete) to queue entries and returns the ids that existed.
func (s *Store) QueueAdmin(ctx context.Context, op string, ids []state.QueueID) ([]state.QueueID, error) {
	switch op {
	case state.QueueRetry, state.QueueBounce, state.QueueDelete:
	default:
		return nil, ErrInvalidArgument
	}
	if len(ids) == 0 {
		return nil, ErrInvalidArgument
	}
	res, err := propose[state.QueueAdminResult](ctx, s, state.QueueAdmin{Time: s.stamp(), Op: op, IDs: ids})
	return res.Changed, err
}

// QueueDue returns up to limit entries due at the queue clock, oldest
// first, and the clock. Local state is enough: a worker claims what it
// found through Raft, and a claim on a stale view is simply not granted.
func (s *Store) QueueDue(ctx context.Context, limit int) ([]state.QueueEntry, int64, error) {
	var out []state.QueueEntry
	var now int64
	err := s.fsm.View(func(tx *state.Tx) error {
		now = tx.QueueNow()
		return tx.QueueDue(now, limit, func(e state.QueueEntry) error {
			out = append(out, e)
			return ctx.Err()
		})
	})
	return out, now, err
}

// QueueNow reads this node's queue clock (unix nanos; 0 before the first
// tick). Local state: it trails the leader's by the replication delay, and
// nothing decided on it is final (claims are judged by the state machine).
func (s *Store) QueueNow(ctx context.Context) int64 {
	var now int64
	_ = s.fsm.View(func(tx *state.Tx) error {
		now = tx.QueueNow()
		return nil
	})
	return now
}

// QueueStats is the queue's size and its oldest entry, from local state.
type QueueStats struct {
	Len           int
	OldestCreated int64 // unix nanos of the oldest entry's creation; 0 when empty
}

// QueueStats reads the queue's size from this node's local state (for
// metrics and the leader's "is there work, keep ticking" check: a lag of
// the replication delay does not matter there).
func (s *Store) QueueStats(ctx context.Context) (QueueStats, error) {
	var st QueueStats
	err := s.fsm.View(func(tx *state.Tx) error {
		st.Len = tx.QueueLen()
		return tx.QueueAll(func(e state.QueueEntry) error {
			st.OldestCreated = e.Created // entries are in ID (log) order: the first is the oldest
			return errStopScan
		})
	})
	if err == errStopScan {
		err = nil
	}
	return st, err
}

// QueueEmpty reports from local state whether the queue has no entry: a
// cheap check (no walk of the queue) for the leader's clock task.
func (s *Store) QueueEmpty(ctx context.Context) (bool, error) {
	empty := true
	err := s.fsm.View(func(tx *state.Tx) error { empty = tx.QueueEmpty(); return nil })
	return empty, err
}

// QueueEntry returns one queue entry as the cluster knows it: it passes a
// read barrier first (an operator's `queue show` on any node sees every
// change acknowledged anywhere before).
func (s *Store) QueueEntry(ctx context.Context, id state.QueueID) (state.QueueEntry, error) {
	if err := s.Barrier(ctx); err != nil {
		return state.QueueEntry{}, err
	}
	var e state.QueueEntry
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		e, err = tx.QueueEntry(id)
		return err
	})
	return e, err
}

// QueueList returns every queue entry in ID (arrival) order, after a read
// barrier, with the queue clock.
func (s *Store) QueueList(ctx context.Context) ([]state.QueueEntry, int64, error) {
	if err := s.Barrier(ctx); err != nil {
		return nil, 0, err
	}
	var out []state.QueueEntry
	var now int64
	err := s.fsm.View(func(tx *state.Tx) error {
		now = tx.QueueNow()
		return tx.QueueAll(func(e state.QueueEntry) error {
			out = append(out, e)
			return ctx.Err()
		})
	})
	return out, now, err
}

// errStopScan ends a scan early; never returned to callers.
var errStopScan = stopScan{}

type stopScan struct{}

func (stopScan) Error() string { return "stop scan" }
