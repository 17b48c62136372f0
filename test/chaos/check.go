package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/replication/blob"
)

// entry is one message in one mailbox as one node showed it.
type entry struct {
	UID    imap.UID
	Flags  Flags
	ID     string
	Intact bool
	Blob   blob.ID
	Trace  string
}

// mailboxView is one mailbox on one node.
type mailboxView struct {
	UIDValidity uint32
	Entries     []entry // in UID order
}

// nodeView is every account's mailboxes on one node.
type nodeView struct {
	node  int
	boxes map[[2]string]*mailboxView // {user, mailbox}
}

// readNode reads every mailbox of every account on node i, whole bodies
// included. SELECT's read barrier makes it show everything acknowledged
// anywhere before it started.
func (r *runner) readNode(ctx context.Context, i int) (*nodeView, error) {
	v := &nodeView{node: i, boxes: make(map[[2]string]*mailboxView)}
	for _, u := range r.accounts {
		s, err := dialIMAP(ctx, i, r.t.IMAPSAddr(i), r.t.ClientTLS(), u.Address, u.Password, 2*time.Minute)
		if err != nil {
			return nil, fmt.Errorf("node%d: %s: %w", i+1, u.Address, err)
		}
		err = func() error {
			defer s.Close()
			names, err := s.mailboxes(ctx)
			if err != nil {
				return fmt.Errorf("LIST: %w", err)
			}
			slices.Sort(names)
			for _, name := range names {
				sel, err := s.selectMailbox(ctx, name)
				if err != nil {
					return fmt.Errorf("SELECT %s: %w", name, err)
				}
				items, err := s.list(ctx, true)
				if err != nil {
					return fmt.Errorf("FETCH %s: %w", name, err)
				}
				mv := &mailboxView{UIDValidity: sel.UIDValidity}
				for _, it := range items {
					st := inspect(it.Raw, r.ledger.lookup)
					mv.Entries = append(mv.Entries, entry{UID: it.UID, Flags: it.Flags, ID: st.MessageID, Intact: st.Intact, Blob: blob.ID(st.Blob), Trace: st.Trace})
				}
				sort.Slice(mv.Entries, func(a, b int) bool { return mv.Entries[a].UID < mv.Entries[b].UID })
				v.boxes[[2]string{u.Address, name}] = mv
			}
			return nil
		}()
		if err != nil {
			return nil, fmt.Errorf("node%d: %s: %w", i+1, u.Address, err)
		}
	}
	return v, nil
}

// CheckResult describes one full check.
type CheckResult struct {
	Label    string
	Present  int           // messages present (on the reference node)
	Blobs    int           // distinct bodies they reference
	Healthy  time.Duration // until every node was ready under one leader
	BlobWait time.Duration // until every node held every body
	Took     time.Duration
	Errors   int      // violations this check found
	Notes    []string // reads refused for a while after the cluster looked healthy
}

// readNodeRetry reads node i, retrying while it refuses (a node may answer
// NO [UNAVAILABLE] for a moment after healing): availability is measured
// elsewhere, the check wants the contents. Refusals become notes.
func (r *runner) readNodeRetry(ctx context.Context, label string, i int, res *CheckResult) (*nodeView, error) {
	start := time.Now()
	deadline := start.Add(r.opts.HealTimeout)
	var first error
	for {
		v, err := r.readNode(ctx, i)
		if err == nil {
			if first != nil {
				res.Notes = append(res.Notes, fmt.Sprintf("node%d refused reads for %v after the cluster looked healthy (first: %v)",
					i+1, time.Since(start).Round(time.Millisecond), first))
			}
			return v, nil
		}
		if first == nil {
			first = fmt.Errorf("%w [cluster: %s]", err, r.admin.describe(ctx))
		} else if d, ok := r.t.(Debugger); ok && time.Since(start) > 10*time.Second && !r.debugged {
			r.debugged = true
			r.logf("node%d still refuses reads after %v: %s", i+1, time.Since(start).Round(time.Millisecond), d.Debug(label))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%v (refused for %v; first: %v; now: %s)", err, r.opts.HealTimeout, first, r.admin.describe(ctx))
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// check stops the workload, reads every node and holds what it finds against
// the ledger. ref is a node untouched by the last fault: its bodies name the
// blobs every node must hold, before reading the others (a read repairs a
// missing copy on the spot, which would hide a repair that never happened).
func (r *runner) check(ctx context.Context, label string, ref int) CheckResult {
	start := time.Now()
	res := CheckResult{Label: label}
	before := len(r.ledger.Violations())
	defer func() {
		res.Took = time.Since(start)
		res.Errors = len(r.ledger.Violations()) - before
		r.checks = append(r.checks, res)
		r.logf("check %s at %s: healthy after %v; %d messages, %d bodies (all on every node after %v); took %v, %d violations %s",
			label, clock(start), res.Healthy.Round(time.Millisecond), res.Present, res.Blobs, res.BlobWait.Round(time.Millisecond), res.Took.Round(time.Millisecond), res.Errors, strings.Join(res.Notes, "; "))
	}()
	took, why, err := r.admin.waitHealthy(ctx, r.opts.HealTimeout)
	if err != nil {
		r.ledger.violate(VUnhealthy, "%s: %v", label, err)
		return res
	}
	res.Healthy = took
	if took > 5*time.Second {
		res.Notes = append(res.Notes, fmt.Sprintf("healthy only after %v (last waiting on: %s)", took.Round(time.Millisecond), why))
	}
	if r.work != nil {
		resume := r.work.Quiesce()
		defer resume()
	}

	refView, err := r.readNodeRetry(ctx, label, ref, &res)
	if err != nil {
		r.ledger.violate(VCheckFailed, "%s: %v", label, err)
		return res
	}
	ids := refView.blobs()
	res.Blobs = len(ids)
	for _, mv := range refView.boxes {
		res.Present += len(mv.Entries)
	}
	var waitedOn string
	res.BlobWait, waitedOn, err = r.waitHolds(ctx, ids)
	if err != nil {
		r.ledger.violate(VUnderRepl, "%s: %v", label, err)
	} else if res.BlobWait > slowBodies {
		res.Notes = append(res.Notes, "bodies were slow to return, last waiting on: "+waitedOn)
	}

	views := []*nodeView{refView}
	for i := range r.t.Nodes() {
		if i == ref {
			continue
		}
		v, err := r.readNodeRetry(ctx, label, i, &res)
		if err != nil {
			r.ledger.violate(VCheckFailed, "%s: %v", label, err)
			continue
		}
		views = append(views, v)
	}
	for _, v := range views[1:] {
		compareViews(r.ledger, label, refView, v)
	}
	// The reference node last: it settles unknown outcomes and moves the
	// UID marks, which the other nodes are held against first.
	for i := len(views) - 1; i >= 0; i-- {
		r.evaluate(label, views[i], i == 0)
	}
	return res
}

// blobs lists the distinct bodies the view references.
func (v *nodeView) blobs() []blob.ID {
	seen := make(map[blob.ID]bool)
	var out []blob.ID
	for _, mv := range v.boxes {
		for _, e := range mv.Entries {
			if !seen[e.Blob] {
				seen[e.Blob] = true
				out = append(out, e.Blob)
			}
		}
	}
	return out
}

// slowBodies is how long bodies may take to be back on every node before
// a check notes what it was waiting on (usually they are back in well under
// a second).
const slowBodies = 5 * time.Second

// waitHolds polls every node until each holds every body (R = the cluster
// size here), and returns how long that took and what it last waited on.
func (r *runner) waitHolds(ctx context.Context, ids []blob.ID) (took time.Duration, waitedOn string, err error) {
	start := time.Now()
	deadline := start.Add(r.opts.RepairTimeout)
	for {
		missing := 0
		var why []string
		for i := range r.t.Nodes() {
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			held, err := r.t.Holds(hctx, i, ids)
			cancel()
			if err != nil {
				missing += len(ids)
				why = append(why, fmt.Sprintf("node%d: %v", i+1, err))
				continue
			}
			n := 0
			for _, ok := range held {
				if !ok {
					n++
				}
			}
			if n > 0 {
				missing += n
				why = append(why, fmt.Sprintf("node%d lacks %d", i+1, n))
			}
		}
		if missing == 0 {
			return time.Since(start), waitedOn, nil
		}
		waitedOn = strings.Join(why, "; ")
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start), waitedOn, fmt.Errorf("%d of %d bodies below %d copies after %v: %s",
				missing, len(ids), r.t.Nodes(), r.opts.RepairTimeout, waitedOn)
		}
		if err := pause(ctx, 500*time.Millisecond); err != nil {
			return time.Since(start), waitedOn, err
		}
	}
}

// compareViews reports every difference between two nodes' mailboxes: the
// same UIDs, the same messages under them, the same flags, the same
// UIDVALIDITY.
func compareViews(l *Ledger, label string, a, b *nodeView) {
	const maxReported = 5
	reported := 0
	report := func(format string, args ...any) {
		if reported < maxReported {
			l.violate(VDiverged, "%s: node%d vs node%d: "+format, append([]any{label, a.node + 1, b.node + 1}, args...)...)
		}
		reported++
	}
	keys := make(map[[2]string]bool)
	for k := range a.boxes {
		keys[k] = true
	}
	for k := range b.boxes {
		keys[k] = true
	}
	for k := range keys {
		ma, mb := a.boxes[k], b.boxes[k]
		if ma == nil || mb == nil {
			report("%s %s exists on one only", k[0], k[1])
			continue
		}
		if ma.UIDValidity != mb.UIDValidity {
			report("%s %s UIDVALIDITY %d vs %d", k[0], k[1], ma.UIDValidity, mb.UIDValidity)
		}
		ea := make(map[imap.UID]entry, len(ma.Entries))
		for _, e := range ma.Entries {
			ea[e.UID] = e
		}
		for _, e := range mb.Entries {
			o, ok := ea[e.UID]
			switch {
			case !ok:
				report("%s %s UID %d (%s) only on node%d", k[0], k[1], e.UID, e.ID, b.node+1)
			case o.ID != e.ID:
				report("%s %s UID %d is %s vs %s", k[0], k[1], e.UID, o.ID, e.ID)
			case o.Flags != e.Flags:
				report("%s %s UID %d (%s) flags %v vs %v", k[0], k[1], e.UID, e.ID, o.Flags, e.Flags)
			}
			delete(ea, e.UID)
		}
		for uid, e := range ea {
			report("%s %s UID %d (%s) only on node%d", k[0], k[1], uid, e.ID, a.node+1)
		}
	}
	if reported > maxReported {
		l.violate(VDiverged, "%s: node%d vs node%d: %d more differences", label, a.node+1, b.node+1, reported-maxReported)
	}
}

// evaluate holds one node's mailboxes against the ledger. On the reference
// node it also settles unknown outcomes (the state found becomes the
// expected one) and moves the UID high-water marks.
func (r *runner) evaluate(label string, v *nodeView, ref bool) {
	where := fmt.Sprintf("%s on node%d", label, v.node+1)
	type loc struct {
		mailbox string
		e       entry
	}
	found := make(map[string][]loc)
	for k, mv := range v.boxes {
		r.ledger.checkUIDs(where, k[0], k[1], mv, ref)
		for _, e := range mv.Entries {
			found[e.ID] = append(found[e.ID], loc{k[1], e})
		}
	}
	l := r.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := func(kind, format string, args ...any) {
		l.violations = append(l.violations, Violation{kind, where + ": " + fmt.Sprintf(format, args...)})
	}
	for id, locs := range found {
		if _, ok := l.msgs[id]; !ok {
			bad(VUnexpected, "%q in %s UID %d", id, locs[0].mailbox, locs[0].e.UID)
		}
	}
	for _, m := range l.order {
		locs := found[m.ID]
		got := State{}
		if len(locs) > 1 {
			var where []string
			for _, lc := range locs {
				where = append(where, fmt.Sprintf("%s UID %d (%s)", lc.mailbox, lc.e.UID, lc.e.Trace))
			}
			bad(VDuplicated, "%s (%s) %d copies: %s; attempts: %s", m.ID, m.Status.name(), len(locs), strings.Join(where, ", "), m.attempts())
		}
		if len(locs) > 0 {
			got = State{Mailbox: locs[0].mailbox, Flags: locs[0].e.Flags}
			for _, lc := range locs {
				if !lc.e.Intact {
					bad(VAltered, "%s in %s UID %d differs from what was sent", m.ID, lc.mailbox, lc.e.UID)
				}
			}
		}
		if len(locs) > 1 {
			continue // reported above; its state is ambiguous
		}
		switch m.Status {
		case StatusAcked, StatusMaybe:
			switch {
			case got == m.Want:
				if ref {
					m.Alt = nil
				}
			case m.Alt != nil && got == *m.Alt:
				if ref {
					m.Want, m.Alt = *m.Alt, nil
				}
			case got.Mailbox == "" && m.Status == StatusAcked && (m.refused == nil || m.refused.Mailbox != ""):
				bad(VLost, "%s (acknowledged: %s) is missing; expected %v%s; IMAP: %s", m.ID, m.attempts(), m.Want, m.alt(), m.opsString())
			default:
				kind := VState
				switch {
				case m.refused != nil && got == *m.refused:
					kind = VNoButDone
				case m.Want.Mailbox == "" && m.gone != "" && len(locs) == 1 && m.gone != fmt.Sprintf("%s %d", got.Mailbox, locs[0].e.UID):
					kind = VReappeared // a copy other than the expunged one: delivered twice
				}
				where := ""
				if len(locs) == 1 {
					where = fmt.Sprintf(" (UID %d, %s)", locs[0].e.UID, locs[0].e.Trace)
				}
				bad(kind, "%s is %v%s, expected %v%s; IMAP: %s; SMTP: %s", m.ID, got, where, m.Want, m.alt(), m.opsString(), m.attempts())
				if ref {
					// Reported once; hold later checks to what is there now.
					m.Want, m.Alt, m.refused = got, nil, nil
				}
			}
		default:
			if got.Mailbox != "" {
				bad(VPhantom, "%s was never acknowledged (%s) yet is in %s (%s)", m.ID, m.attempts(), got.Mailbox, locs[0].e.Trace)
				if ref && m.Status == StatusRefused {
					// Reported once; from now on it is simply there.
					m.Status, m.Want, m.Alt = StatusMaybe, got, nil
				}
			}
		}
	}
}

func (s Status) name() string {
	return [...]string{"pending", "acknowledged", "unknown outcome", "refused"}[s]
}

// attempts summarises a message's attempts for a violation report.
func (m *Message) attempts() string {
	var parts []string
	for _, a := range m.Attempts {
		p := fmt.Sprintf("node%d %s at %s", a.Node+1, a.Outcome, clock(a.Start))
		if !a.Commit.IsZero() {
			p += fmt.Sprintf(", dot at %s, answer after %v", clock(a.Commit), a.End.Sub(a.Commit).Round(time.Millisecond))
		}
		if a.Outcome != OutcomeAcked && a.Reply != "" {
			p += " (" + truncate(a.Reply, 90) + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func (m *Message) alt() string {
	if m.Alt == nil {
		return ""
	}
	return " or " + m.Alt.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkUIDs checks one mailbox listing against everything seen of it: the
// same UIDVALIDITY, no UID naming two messages, and no message appearing
// at or below the highest UID of the previous full check.
func (l *Ledger) checkUIDs(where, user, mailbox string, mv *mailboxView, ref bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mb := l.mailboxLocked(user, mailbox, mv.UIDValidity, where)
	var high imap.UID
	for _, e := range mv.Entries {
		if prev, ok := mb.uids[e.UID]; ok && prev != e.ID {
			l.violations = append(l.violations, Violation{VUIDReused,
				fmt.Sprintf("%s: %s %s UID %d was %s, now %s", where, user, mailbox, e.UID, prev, e.ID)})
		}
		if e.UID <= mb.maxChecked && mb.checked[e.UID] != e.ID {
			l.violations = append(l.violations, Violation{VUIDOrder,
				fmt.Sprintf("%s: %s %s: %s appeared with UID %d, not above %d seen before", where, user, mailbox, e.ID, e.UID, mb.maxChecked)})
		}
		mb.uids[e.UID] = e.ID
		high = max(high, e.UID)
	}
	if ref {
		mb.checked = make(map[imap.UID]string, len(mv.Entries))
		for _, e := range mv.Entries {
			mb.checked[e.UID] = e.ID
		}
		mb.maxChecked = max(mb.maxChecked, high)
	}
}

// clock formats a time of day with milliseconds, as the run log does.
func clock(t time.Time) string { return t.Format("15:04:05.000") }

// opsString lists the IMAP operations done on a message.
func (m *Message) opsString() string {
	if len(m.ops) == 0 {
		return "none"
	}
	return strings.Join(m.ops, "; ")
}
