package state

import (
	"math"
	"time"
)

// maxLease bounds QueueClaim's and QueueRenew's Lease: leases are seconds;
// anything near this is a mistake that would strand an entry.
const maxLease = int64(24 * time.Hour)

// maxQueueOrdinals is how many queue entries one command may create (the
// ordinal N of a QueueID is 16 bits).
const maxQueueOrdinals = math.MaxUint16 + 1

func (a *applier) queueTick(c *QueueTick) (Result, error) {
	if c.Time < 0 {
		return nil, ErrInvalidArgument
	}
	// Every tick records its index, whether or not it moves the clock: it
	// says the clock was read after everything before it in the log.
	if err := a.meta.Put(metaQueueTick, u64(a.index)); err != nil {
		return nil, err
	}
	if c.Time > a.queueNow() {
		if err := a.meta.Put(metaQueueNow, u64(uint64(c.Time))); err != nil {
			return nil, err
		}
		a.emit(QueueTicked{Index: a.index, Now: c.Time})
	}
	return Done{}, nil
}

// leaseUntil is queue time now + lease, or ErrInvalidArgument.
func leaseUntil(now, lease int64) (int64, error) {
	if lease <= 0 || lease > maxLease || now > math.MaxInt64-lease {
		return 0, ErrInvalidArgument
	}
	return now + lease, nil
}

func (a *applier) queueClaim(c *QueueClaim) (Result, error) {
	now, tick := a.queueNow(), queueTickIndex(a.meta)
	until, err := leaseUntil(now, c.Lease)
	if err != nil || c.Node == "" {
		return nil, ErrInvalidArgument
	}
	res := ClaimResult{Token: a.index}
	for _, id := range c.IDs {
		r, ok, err := a.queueRecord(id)
		if err != nil {
			return nil, err
		}
		if !ok || r.NextAttempt > now || r.lease().Held(now) || !clockReadSince(id, tick) {
			continue
		}
		r.setLease(Lease{Holder: c.Node, Token: a.index, Until: until})
		r.Attempts++
		if err := a.putQueue(id, &r, r.NextAttempt, false); err != nil {
			return nil, err
		}
		res.Granted = append(res.Granted, id)
	}
	return res, nil
}

func (a *applier) queueRenew(c *QueueRenew) (Result, error) {
	until, err := leaseUntil(a.queueNow(), c.Lease)
	if err != nil || c.Token == 0 {
		return nil, ErrInvalidArgument
	}
	var res RenewResult
	for _, id := range c.IDs {
		r, ok, err := a.queueRecord(id)
		if err != nil {
			return nil, err
		}
		// A lease that ran out but was not claimed by anyone else still
		// carries this token: nobody else can have started, so renewing
		// it is safe.
		if !ok || r.Token != c.Token {
			continue
		}
		if r.Until != until {
			r.Until = until
			if err := a.putQueue(id, &r, r.NextAttempt, false); err != nil {
				return nil, err
			}
		}
		res.Held = append(res.Held, id)
	}
	return res, nil
}

// validBounce checks a bounce before anything is written; n counts the
// queue entries the command will create.
func validBounce(b *Bounce, n *int) bool {
	if b.Blob.IsZero() || b.Size < 0 || len(b.Local)+len(b.Remote) == 0 {
		return false
	}
	switch b.Kind {
	case BounceFailed, BounceDelayed, BounceDelivered:
	default:
		return false
	}
	for i := range b.Remote {
		if !validQueueTarget(&b.Remote[i]) {
			return false
		}
	}
	*n += len(b.Remote)
	return *n <= maxQueueOrdinals
}

func (a *applier) queueReport(c *QueueReport) (Result, error) {
	if c.Token == 0 {
		return nil, ErrInvalidArgument
	}
	created := 0
	for _, o := range c.Outcomes {
		if o.Kind < OutcomeDelivered || o.Kind > OutcomeFailed {
			return nil, ErrInvalidArgument
		}
		if o.Bounce != nil && !validBounce(o.Bounce, &created) {
			return nil, ErrInvalidArgument
		}
	}
	res := ReportResult{Outcomes: make([]OutcomeResult, len(c.Outcomes))}
	n := 0
	for i, o := range c.Outcomes {
		r, ok, err := a.queueRecord(o.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
			res.Outcomes[i].Status = Status{Code: CodeNoSuchQueueEntry}
			continue
		case r.Token != c.Token:
			res.Outcomes[i].Status = Status{Code: CodeStaleLease}
			continue
		}
		if b := o.Bounce; b != nil {
			out, err := a.storeBounce(b, &n)
			if err != nil {
				return nil, err
			}
			res.Outcomes[i] = out
		}
		switch o.Kind {
		case OutcomeDelivered, OutcomeFailed:
			if err := a.removeQueue(o.ID, &r); err != nil {
				return nil, err
			}
		case OutcomeDeferred:
			old := r.NextAttempt
			r.setLease(Lease{})
			r.NextAttempt = o.NextAttempt
			r.LastReply, r.LastHost = o.Reply, o.Host
			if o.Bounce != nil && o.Bounce.Kind == BounceDelayed {
				r.DelayDSNSent = true
			}
			if err := a.putQueue(o.ID, &r, old, false); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// storeBounce stores a DSN's local copies (as Deliver does, each failing
// alone) and queue entries, numbered from *n on.
func (a *applier) storeBounce(b *Bounce, n *int) (OutcomeResult, error) {
	var out OutcomeResult
	d := &Deliver{Time: a.now, Blob: b.Blob, Size: b.Size, Summary: b.Summary}
	if len(b.Local) > 0 {
		out.Targets = make([]TargetResult, len(b.Local))
	}
	for i, t := range b.Local {
		tr, err := a.deliverOne(d, t, a.now, 0)
		if err != nil {
			if sentinelCode(err) == CodeOK {
				return out, err
			}
			tr = TargetResult{Status: Status{Code: sentinelCode(err)}}
		}
		out.Targets[i] = tr
	}
	ids, err := a.enqueue(b.Blob, b.Size, b.Summary, b.Remote, n)
	if err != nil {
		return out, err
	}
	out.Queued = ids
	return out, nil
}

func (a *applier) queueAdmin(c *QueueAdmin) (Result, error) {
	switch c.Op {
	case QueueRetry, QueueBounce, QueueDelete:
	default:
		return nil, ErrInvalidArgument
	}
	now := a.queueNow()
	var res QueueAdminResult
	var due []QueueID
	for _, id := range c.IDs {
		r, ok, err := a.queueRecord(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if c.Op == QueueDelete {
			if err := a.removeQueue(id, &r); err != nil {
				return nil, err
			}
			res.Changed = append(res.Changed, id)
			continue
		}
		old := r.NextAttempt
		r.NextAttempt = now
		if c.Op == QueueBounce {
			r.Bounce = true
		}
		if !r.lease().Held(now) {
			r.setLease(Lease{})
			due = append(due, id)
		}
		if err := a.putQueue(id, &r, old, false); err != nil {
			return nil, err
		}
		res.Changed = append(res.Changed, id)
	}
	if len(due) > 0 {
		a.emit(QueueChanged{Index: a.index, Due: due})
	}
	return res, nil
}
