package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"time"
)

// OutsideResult is what became of the mail for outside recipients: every
// acknowledged one must reach the sink once the queue has drained. One
// window SMTP cannot close may deliver a recipient twice: the remote's 250
// arrived and the sending node died (or was cut off, frozen, stopped)
// before the cluster committed the result, so another node sends it again
// once the lease runs out. Those duplicates are counted, not violations; a
// duplicate with no fault near its first copy is one.
type OutsideResult struct {
	Sent  int `json:"sent"`  // messages with an outside recipient the workload started
	Acked int `json:"acked"` // of them acknowledged (250 to the submission)
	Maybe int `json:"maybe"` // outcome unknown: may arrive once, or never
	// MaybeArrived counts the unknown ones that did arrive.
	MaybeArrived int `json:"maybe_arrived"`
	Refused      int `json:"refused"` // refused and given up: must never arrive
	Mixed        int `json:"mixed"`   // acknowledged ones that had a local recipient too
	Arrived      int `json:"arrived"` // acknowledged recipients that reached the sink
	// Duplicates counts the copies beyond the first, of any recipient;
	// DuplicatesNoFault those whose first copy arrived with no fault near.
	Duplicates        int      `json:"duplicates"`
	DuplicatesNoFault int      `json:"duplicates_no_fault"`
	DuplicateDetail   []string `json:"duplicate_detail,omitempty"`
	Lost              int      `json:"lost"`
	Phantom           int      `json:"phantom"`
	// Overlapped: recipients two transactions ever held at the sink at once
	// (a frozen or cut-off node's connection can stay open while another
	// node sends; reported, not a violation: the fencing check before the
	// final dot is what keeps a copy from being committed twice).
	Overlapped int `json:"overlapped"`
	// Drained is how long after the senders stopped the queue was empty.
	Drained    time.Duration `json:"drained_ns"`
	QueueLeft  int           `json:"queue_left"`
	Unexpected int           `json:"unexpected"`
}

// outsideGrace is how long after a fault healed a duplicate still counts as
// caused by it: the lease of the dead sender must run out (10 s by
// default), another node must claim and send.
const outsideGrace = 45 * time.Second

// outsideBefore is how long before a fault a first copy may have arrived
// and still be the one whose result the fault kept from being committed.
const outsideBefore = 5 * time.Second

// drainOutside waits until the outbound queue is empty (on the leader), up
// to timeout, and returns how long that took and how many entries were left.
func (r *runner) drainOutside(ctx context.Context, timeout time.Duration) (time.Duration, int) {
	start := time.Now()
	deadline := start.Add(timeout)
	left, last := -1, ""
	for {
		l := r.admin.leader(ctx, r.all())
		if l >= 0 {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			q, err := r.admin.client(l).Queue(qctx)
			cancel()
			if err == nil {
				left = len(q.Entries)
				if left == 0 {
					return time.Since(start), 0
				}
				e := q.Entries[0]
				last = fmt.Sprintf("oldest %s to %s: %d attempts, last reply %q from %q, held by %q", e.ID, e.To, e.Attempts, e.LastReply, e.LastHost, e.HeldBy)
			} else {
				last = err.Error()
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.ledger.violate(VQueueStuck, "the outbound queue still held %d entries %v after the senders stopped (%s)", left, timeout, last)
			return time.Since(start), left
		}
		_ = pause(ctx, 250*time.Millisecond)
	}
}

// checkOutside holds what the sink stored against the ledger: every
// acknowledged outside recipient arrived, intact; nothing refused arrived;
// duplicates only near a fault.
func (r *runner) checkOutside(ctx context.Context, ow OutsideWorld, drained time.Duration, left int) *OutsideResult {
	res := &OutsideResult{Drained: drained, QueueLeft: left}
	var arr Arrivals
	var err error
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		arr, err = ow.Arrivals(actx)
		cancel()
		if err == nil || try == 5 || pause(ctx, time.Second) != nil {
			break
		}
	}
	if err != nil {
		r.ledger.violate(VCheckFailed, "outside: the sink could not be read: %v", err)
		return res
	}
	res.Overlapped = len(arr.Overlapped)
	byID := make(map[string][]Arrival)
	for _, a := range arr.Messages {
		id := messageID(a.Data)
		byID[id] = append(byID[id], a)
	}
	l := r.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := func(kind, format string, args ...any) {
		l.violations = append(l.violations, Violation{kind, "outside: " + fmt.Sprintf(format, args...)})
	}
	for id, as := range byID {
		if m, ok := l.msgs[id]; !ok || m.Outside == "" {
			res.Unexpected += len(as)
			to := ""
			if len(as[0].To) > 0 {
				to = as[0].To[0]
			}
			bad(VUnexpected, "the sink got %q (to %s) %d times, which the workload never sent outside", id, to, len(as))
		}
	}
	for _, m := range l.order {
		if m.Outside == "" {
			continue
		}
		res.Sent++
		var copies []Arrival
		for _, a := range byID[m.ID] {
			for _, to := range a.To {
				if strings.EqualFold(to, m.Outside) {
					copies = append(copies, a)
					break
				}
			}
		}
		sort.Slice(copies, func(i, j int) bool { return copies[i].N < copies[j].N })
		for _, c := range copies {
			if !endsWith(c.Data, m.Size, m.Hash) {
				bad(VOutsideAltered, "%s to %s (sink #%d) does not end with the bytes sent", m.ID, m.Outside, c.N)
			}
		}
		switch m.Status {
		case StatusAcked:
			res.Acked++
			if m.User != "" {
				res.Mixed++
			}
			if len(copies) == 0 {
				res.Lost++
				bad(VOutsideLost, "%s to %s (acknowledged: %s) never reached the sink", m.ID, m.Outside, m.attempts())
				continue
			}
			res.Arrived++
		case StatusMaybe:
			res.Maybe++
			if len(copies) > 0 {
				res.MaybeArrived++
			}
		default:
			res.Refused++
			if len(copies) > 0 {
				res.Phantom++
				bad(VPhantom, "%s to %s was never acknowledged (%s) yet reached the sink %d times", m.ID, m.Outside, m.attempts(), len(copies))
				continue
			}
		}
		if len(copies) > 1 {
			res.Duplicates += len(copies) - 1
			near := r.faultNear(copies[0].Received)
			detail := fmt.Sprintf("%s to %s: %d copies, first at %s, then %s", m.ID, m.Outside, len(copies), clock(copies[0].Received), arrivalTimes(copies[1:]))
			if near == "" {
				res.DuplicatesNoFault += len(copies) - 1
				bad(VOutsideDup, "%s; no fault near the first copy", detail)
			} else {
				detail += "; " + near
			}
			res.DuplicateDetail = append(res.DuplicateDetail, detail)
		}
	}
	return res
}

// faultNear names the fault during which (or shortly after which) t fell;
// "" if none.
func (r *runner) faultNear(t time.Time) string {
	for _, f := range r.faults {
		end := f.End
		if end.IsZero() {
			end = f.At
		}
		if !t.Before(f.At.Add(-outsideBefore)) && !t.After(end.Add(outsideGrace)) {
			return fmt.Sprintf("during or after %s on %s (%s to %s)", f.Kind, nodeLabel(f.Node), clock(f.At), clock(end))
		}
	}
	return ""
}

func arrivalTimes(as []Arrival) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, clock(a.Received))
	}
	return strings.Join(parts, ", ")
}

// endsWith reports whether data ends with the size bytes that hash to
// hash, after complete header lines (the trace and DKIM-Signature fields a
// node adds in front).
func endsWith(data []byte, size int, hash [32]byte) bool {
	if size > len(data) {
		return false
	}
	prefix, sent := data[:len(data)-size], data[len(data)-size:]
	return sha256.Sum256(sent) == hash && (len(prefix) == 0 || bytes.HasSuffix(prefix, []byte("\r\n")))
}
