package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// FaultSummary is every fault of one kind.
type FaultSummary struct {
	Kind     Fault         `json:"kind"`
	Injected int           `json:"injected"`
	P50      time.Duration `json:"unavailable_p50_ns"`
	Max      time.Duration `json:"unavailable_max_ns"`
	Samples  int           `json:"samples"`
	// Replies clients got while faults of this kind lasted, with the
	// slowest answer of each kind.
	Replies map[string]int           `json:"replies"`
	Slowest map[string]time.Duration `json:"slowest_ns"`
}

// Report is the outcome of a run.
type Report struct {
	Target   string        `json:"target"`
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"took_ns"`
	Seed     uint64        `json:"seed"`
	Faults   []FaultSummary
	Records  []FaultRecord  `json:"records"`
	Checks   []CheckResult  `json:"checks"`
	Totals   Totals         `json:"totals"`
	Counts   map[string]int `json:"violation_counts"` // distinct messages (or events) per violation kind
	Problems []Violation    `json:"violations"`
	// CutoffAttempts and CutoffAcked add up what cut-off nodes were asked
	// to write and how often they said yes (must be 0).
	CutoffAttempts int `json:"cutoff_attempts"`
	CutoffAcked    int `json:"cutoff_acked"`
	// Outside is what became of the mail for outside recipients (nil: the
	// run sent none).
	Outside *OutsideResult `json:"outside,omitempty"`
	Passed  bool           `json:"passed"`
}

func (r *runner) report(started time.Time) *Report {
	rep := &Report{
		Target:  r.t.Name(),
		Started: started,
		Took:    time.Since(started),
		Seed:    r.opts.Seed,
		Records: r.faults,
		Checks:  r.checks,
		Totals:  r.ledger.Totals(),
		Counts:  make(map[string]int),
		Outside: r.outside,
	}
	byKind := make(map[Fault]*FaultSummary)
	var samples = make(map[Fault][]time.Duration)
	for _, f := range r.faults {
		s := byKind[f.Kind]
		if s == nil {
			s = &FaultSummary{Kind: f.Kind, Replies: make(map[string]int), Slowest: make(map[string]time.Duration)}
			byKind[f.Kind] = s
		}
		s.Injected++
		samples[f.Kind] = append(samples[f.Kind], f.Unavailable...)
		for k, v := range f.Replies.Replies {
			s.Replies[k] += v
		}
		for k, v := range f.Replies.Slowest {
			s.Slowest[k] = max(s.Slowest[k], v)
		}
		if f.Cutoff != nil {
			rep.CutoffAttempts += f.Cutoff.Attempts + f.Cutoff.IMAPWrites
			rep.CutoffAcked += f.Cutoff.AckedWithin
		}
	}
	for _, kind := range r.opts.Schedule {
		s := byKind[kind]
		if s == nil {
			if r.t.Supports(kind) {
				r.ledger.violate(VFaultNotRun, "%s was never injected", kind)
			}
			continue
		}
		d := slices.Clone(samples[kind])
		slices.Sort(d)
		if len(d) > 0 {
			s.P50, s.Max, s.Samples = d[(len(d)-1)/2], d[len(d)-1], len(d)
		}
		if kind == KillLeader && r.opts.UnavailabilityTarget > 0 && s.P50 > r.opts.UnavailabilityTarget {
			r.ledger.violate(VUnavailTarget, "writes unavailable %v (p50) after a leader kill, target %v", s.P50, r.opts.UnavailabilityTarget)
		}
		rep.Faults = append(rep.Faults, *s)
		delete(byKind, kind)
	}
	rep.Problems = r.ledger.Violations()
	// Count distinct messages per kind (a lost message is missing on every
	// node, but it is one lost message).
	seen := make(map[string]bool)
	for _, v := range rep.Problems {
		key := v.Kind + " " + subject(v.Detail)
		if !seen[key] {
			seen[key] = true
			rep.Counts[v.Kind]++
		}
	}
	rep.Passed = len(rep.Problems) == 0
	return rep
}

// subject is the message a violation is about: its first token that looks
// like one of our Message-IDs, else the whole detail.
func subject(detail string) string {
	for _, f := range strings.Fields(detail) {
		if strings.Contains(f, "@"+Domain) && strings.HasPrefix(f, "chaos-") {
			return strings.Trim(f, "\"(),:")
		}
	}
	return detail
}

// WriteTable prints the report as the table people read.
func (rep *Report) WriteTable(w io.Writer) {
	verdict := "PASSED"
	if !rep.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "chaos run on %s: %s (took %v, seed %d)\n\n", rep.Target, verdict, rep.Took.Round(time.Second), rep.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tinjected\twrites unavailable p50\tmax\treplies to SMTP clients meanwhile (slowest)")
	for _, f := range rep.Faults {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%s\n", f.Kind, f.Injected, round(f.P50), round(f.Max), replies(f.Replies, f.Slowest))
	}
	_ = tw.Flush()
	t := rep.Totals
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("messages sent", t.Sent)
	row("acknowledged (250)", fmt.Sprintf("%d (of them %d availability probes)", t.Acked, t.ProbesAcked))
	row("outcome unknown (may be present once: answer lost, or \"may have been stored\")", t.Maybe)
	row("refused and given up", t.Refused+t.Pending)
	row("SMTP attempts", t.Attempts)
	row("lost", rep.Counts[VLost])
	row("duplicated", fmt.Sprintf("%d (of them %d showed up again after their first copy was expunged)", rep.Counts[VDuplicated]+rep.Counts[VReappeared], rep.Counts[VReappeared]))
	row("altered", rep.Counts[VAltered])
	row("delivered after a refusal (451)", rep.Counts[VPhantom])
	row("IMAP changes applied after NO", rep.Counts[VNoButDone])
	row("cut-off side: writes tried / acknowledged while cut off", fmt.Sprintf("%d / %d", rep.CutoffAttempts, rep.CutoffAcked))
	var ops []string
	for kind, by := range t.IMAPOps {
		ops = append(ops, fmt.Sprintf("%s %d ok, %d NO, %d unknown", kind, by[OutcomeAcked], by[OutcomeRefused], by[OutcomeUnknown]))
	}
	sort.Strings(ops)
	row("IMAP operations", strings.Join(ops, "; "))
	if o := rep.Outside; o != nil {
		row("outside: sent / acknowledged (of them also local) / outcome unknown (of them arrived) / refused", fmt.Sprintf("%d / %d (%d) / %d (%d) / %d", o.Sent, o.Acked, o.Mixed, o.Maybe, o.MaybeArrived, o.Refused))
		row("outside: acknowledged recipients that reached the sink", fmt.Sprintf("%d of %d", o.Arrived, o.Acked))
		row("outside: duplicates (remote's 250 in, sender died before committing it)", fmt.Sprintf("%d (with no fault near: %d)", o.Duplicates, o.DuplicatesNoFault))
		row("outside: lost (acknowledged, never arrived)", o.Lost)
		row("outside: arrived after a refusal", o.Phantom)
		row("outside: queue empty after the senders stopped", fmt.Sprintf("%v (%d entries left)", round(o.Drained), o.QueueLeft))
		row("outside: recipients held by two transactions at once at the sink", o.Overlapped)
	}
	row("checks (every node, every mailbox)", len(rep.Checks))
	_ = tw.Flush()
	if o := rep.Outside; o != nil && len(o.DuplicateDetail) > 0 {
		fmt.Fprintf(w, "\noutside duplicates:\n")
		for _, d := range o.DuplicateDetail {
			fmt.Fprintf(w, "  %s\n", d)
		}
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintf(w, "\n%d violations:\n", len(rep.Problems))
		kinds := make([]string, 0, len(rep.Counts))
		for k := range rep.Counts {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "  %s: %d\n", k, rep.Counts[k])
		}
		// One line per broken promise (a duplicate is seen on every node,
		// in every later check); the JSON file has every sighting.
		type group struct {
			first Violation
			n     int
		}
		var order []string
		groups := make(map[string]*group)
		for _, v := range rep.Problems {
			key := v.Kind + " " + subject(v.Detail)
			if g, ok := groups[key]; ok {
				g.n++
				continue
			}
			groups[key] = &group{first: v, n: 1}
			order = append(order, key)
		}
		for i, key := range order {
			if i == 40 {
				fmt.Fprintf(w, "  … %d more in the report file\n", len(order)-i)
				break
			}
			g := groups[key]
			seen := ""
			if g.n > 1 {
				seen = fmt.Sprintf(" (seen %d times)", g.n)
			}
			fmt.Fprintf(w, "  [%s] %s%s\n", g.first.Kind, g.first.Detail, seen)
		}
	}
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func replies(m map[string]int, slowest map[string]time.Duration) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d (%v)", k, m[k], slowest[k].Round(100*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// WriteFiles writes the table to path and the whole report as JSON next to
// it (path with .json).
func (rep *Report) WriteFiles(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rep.WriteTable(f)
	if err := f.Close(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(strings.TrimSuffix(path, ".txt")+".json", b, 0o644)
}
