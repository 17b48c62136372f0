package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Options shape a run.
type Options struct {
	// Schedule is the faults to inject, in order. With Duration set, the
	// runner keeps injecting the schedule's kinds in shuffled rounds until
	// Duration has passed.
	Schedule []Fault
	Duration time.Duration
	Load     Load
	// Hold is how long a fault lasts at least (default 6 s); it lasts until
	// writes work again on the surviving nodes in any case.
	Hold   time.Duration
	Warmup time.Duration // load before the first fault (default 3 s)
	// HealTimeout bounds the wait for a healthy cluster after a fault;
	// RepairTimeout the wait until every body is back on every node;
	// ProbeTimeout the wait for writes to work again after a fault.
	HealTimeout   time.Duration
	RepairTimeout time.Duration
	ProbeTimeout  time.Duration
	// PartitionHold is how long a partition lasts at least: long enough for
	// the cut-off side to give up on the writes it was sent (default 10 s).
	PartitionHold time.Duration
	// OutsideDrain bounds the wait for the outbound queue to empty after
	// the senders stopped, when Load.Outside is set (default 2 min).
	OutsideDrain time.Duration
	// UnavailabilityTarget, if set, fails the run when the p50 write
	// unavailability after a leader kill is above it.
	UnavailabilityTarget time.Duration
	Seed                 uint64
	Logf                 func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if len(o.Schedule) == 0 {
		o.Schedule = AllFaults
	}
	if o.Hold <= 0 {
		o.Hold = 6 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	if o.HealTimeout <= 0 {
		o.HealTimeout = 3 * time.Minute
	}
	if o.RepairTimeout <= 0 {
		o.RepairTimeout = 3 * time.Minute
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 2 * time.Minute
	}
	if o.PartitionHold <= 0 {
		o.PartitionHold = 10 * time.Second
	}
	if o.OutsideDrain <= 0 {
		o.OutsideDrain = 2 * time.Minute
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	o.Load.Seed = o.Seed
	o.Load = o.Load.withDefaults()
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind Fault
	Node int // the node it hit (-1: all, in turn)
	At   time.Time
	// Unavailable is how long after the fault writes first succeeded again
	// on every node still in the majority, once per measurement (a rolling
	// restart measures each step).
	Unavailable []time.Duration
	// PerNode is, for the last measurement, how long each surviving node
	// refused or delayed writes.
	PerNode map[string]time.Duration
	// End is when the fault was healed.
	End time.Time
	// Command is how long the fault command itself took (docker's latency);
	// it is part of Unavailable, which is measured from its start.
	Command time.Duration
	// Replies are the SMTP answers clients got while the fault lasted.
	Replies AttemptStats
	// Cutoff is what the cut-off node answered while isolated
	// (partition-leader only).
	Cutoff *AttemptStats
	Note   string

	// finish runs after the following check, once every attempt made while
	// the fault lasted has its answer.
	finish func()
}

type runner struct {
	t        Target
	opts     Options
	ledger   *Ledger
	admin    *admin
	work     *Workload
	accounts []account // users, then the probe account
	rng      *mrand.Rand
	checks   []CheckResult
	faults   []FaultRecord
	outside  *OutsideResult
	logf     func(string, ...any)
	debugged bool // a Debugger was already asked once
}

// Debugger is a Target that can capture its internal state (goroutine
// stacks, say) when a node misbehaves, and tell where it put it.
type Debugger interface {
	Debug(reason string) string
}

// Run injects the schedule's faults into t while the workload runs, checks
// after each one and at the end, and returns the report. It returns an error
// only when the run itself could not be carried out (a fault could not be
// injected); what the cluster did wrong is in the report's violations.
func Run(ctx context.Context, t Target, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	runID := randomHex(4)
	r := &runner{
		t:      t,
		opts:   opts,
		ledger: NewLedger("chaos-" + runID),
		admin:  newAdmin(t),
		rng:    mrand.New(mrand.NewPCG(opts.Seed, 7)),
		logf:   opts.Logf,
	}
	started := time.Now()
	ow, _ := t.(OutsideWorld)
	if opts.Load.Outside > 0 && ow == nil {
		return nil, fmt.Errorf("Load.Outside is %v but %s has no outside world to read", opts.Load.Outside, t.Name())
	}
	r.logf("run %s: seed %d, %d nodes, schedule %v, duration %v, %.0f%% of new messages to the outside", runID, opts.Seed, t.Nodes(), opts.Schedule, opts.Duration, 100*opts.Load.Outside)
	var users []account
	for i := range opts.Load.Users {
		users = append(users, account{Address: fmt.Sprintf("user%d-%s@%s", i+1, runID, Domain), Password: randomHex(12)})
	}
	probe := account{Address: fmt.Sprintf("probe-%s@%s", runID, Domain), Password: randomHex(12)}
	r.accounts = append(slices.Clone(users), probe)

	if _, _, err := r.admin.waitHealthy(ctx, opts.HealTimeout); err != nil {
		return nil, fmt.Errorf("cluster never became healthy: %w", err)
	}
	if err := r.admin.setup(ctx, r.accounts); err != nil {
		return nil, fmt.Errorf("create the chaos accounts: %w", err)
	}
	r.work = newWorkload(t, r.ledger, opts.Load, users, probe)
	r.work.Start(ctx)
	stopped := false
	defer func() {
		if !stopped {
			r.work.Stop()
		}
	}()
	if err := pause(ctx, opts.Warmup); err != nil {
		return nil, err
	}
	r.check(ctx, "baseline", r.mustLeader(ctx))

	n := 0
	for round := 0; ; round++ {
		schedule := opts.Schedule
		if round > 0 {
			if opts.Duration <= 0 || time.Since(started) >= opts.Duration {
				break
			}
			schedule = slices.Clone(opts.Schedule)
			r.rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
		}
		for _, f := range schedule {
			if round > 0 && time.Since(started) >= opts.Duration {
				break
			}
			if !t.Supports(f) {
				continue
			}
			n++
			rec, ref, err := r.inject(ctx, f, round)
			if err != nil {
				return r.report(started), fmt.Errorf("inject %s: %w", f, err)
			}
			r.logf("fault %d %s on %s at %s (the command took %v), healed at %s: writes unavailable %v %v %s",
				n, f, nodeLabel(rec.Node), clock(rec.At), rec.Command.Round(time.Millisecond), clock(rec.End), rec.Unavailable, rec.PerNode, rec.Note)
			r.check(ctx, fmt.Sprintf("after %s #%d", f, n), ref)
			rec.Replies = r.ledger.attemptStats(-1, rec.At, rec.End)
			if rec.finish != nil {
				rec.finish()
			}
			r.logf("fault %d: SMTP replies while it lasted: %v", n, rec.Replies.Replies)
			if rec.Cutoff != nil {
				r.logf("fault %d: the cut-off node was sent %d messages and answered %v (slowest %v, answers after the heal included); it got %d IMAP writes; it acknowledged %d writes while cut off",
					n, rec.Cutoff.Attempts, rec.Cutoff.Replies, rec.Cutoff.Slowest, rec.Cutoff.IMAPWrites, rec.Cutoff.AckedWithin)
			}
			r.faults = append(r.faults, *rec)
		}
	}

	r.logf("draining: no new messages; retrying refused ones")
	dctx, cancel := context.WithTimeout(ctx, opts.Load.GiveUpAfter+time.Minute)
	r.work.Drain(dctx)
	cancel()
	r.work.Stop()
	stopped = true
	var drained time.Duration
	left := 0
	if opts.Load.Outside > 0 {
		r.logf("draining: waiting for the outbound queue to empty (at most %v)", opts.OutsideDrain)
		drained, left = r.drainOutside(ctx, opts.OutsideDrain)
		r.logf("the outbound queue was empty %v after the senders stopped (%d entries left)", drained.Round(time.Millisecond), left)
	}
	r.check(ctx, "final", r.mustLeader(ctx))
	if opts.Load.Outside > 0 {
		r.outside = r.checkOutside(ctx, ow, drained, left)
		o := r.outside
		r.logf("outside: %d acknowledged recipients, %d arrived, %d duplicates (%d with no fault near), %d lost, %d arrived after a refusal",
			o.Acked, o.Arrived, o.Duplicates, o.DuplicatesNoFault, o.Lost, o.Phantom)
	}
	return r.report(started), nil
}

func nodeLabel(i int) string {
	if i < 0 {
		return "every node"
	}
	return nodeName(i)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mustLeader polls for the leader; -1 (and a violation) if none appears.
func (r *runner) mustLeader(ctx context.Context) int {
	all := r.all()
	deadline := time.Now().Add(r.opts.HealTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if l := r.admin.leader(ctx, all); l >= 0 {
			return l
		}
		_ = pause(ctx, 100*time.Millisecond)
	}
	r.ledger.violate(VUnhealthy, "no leader within %v", r.opts.HealTimeout)
	return 0
}

func (r *runner) all() []int {
	out := make([]int, r.t.Nodes())
	for i := range out {
		out[i] = i
	}
	return out
}

func (r *runner) others(i int) []int {
	var out []int
	for j := range r.t.Nodes() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

// measure starts probes on nodes right after a fault injected at t0. The
// returned function waits for them and returns how long writes were
// unavailable: until every probed node had acknowledged a delivery.
func (r *runner) measure(ctx context.Context, t0 time.Time, nodes []int, rec *FaultRecord) func() (time.Duration, string) {
	pctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	note := ""
	rec.PerNode = make(map[string]time.Duration)
	for _, i := range nodes {
		wg.Add(1)
		rng := mrand.New(mrand.NewPCG(r.rng.Uint64(), uint64(i)))
		go func() {
			defer wg.Done()
			at, err := r.work.probeUntilAcked(pctx, i, rng)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				note = fmt.Sprintf("writes on %s did not work again within %v", nodeName(i), r.opts.ProbeTimeout)
				r.ledger.violate(VNoWrites, "writes on %s (majority side) refused for %v after the fault at %s", nodeName(i), r.opts.ProbeTimeout, clock(t0))
				worst = max(worst, r.opts.ProbeTimeout)
				rec.PerNode[nodeName(i)] = r.opts.ProbeTimeout
				return
			}
			worst = max(worst, at.Sub(t0))
			rec.PerNode[nodeName(i)] = at.Sub(t0).Round(time.Millisecond)
		}()
	}
	return func() (time.Duration, string) {
		wg.Wait()
		cancel()
		return worst, note
	}
}

// holdUntil keeps a fault in place until at least t0+Hold.
func (r *runner) holdUntil(ctx context.Context, t0 time.Time) error {
	if d := time.Until(t0.Add(r.opts.Hold)); d > 0 {
		return pause(ctx, d)
	}
	return nil
}

// inject runs one fault from injection to heal and returns its record and
// a node untouched by it (the checker's reference).
func (r *runner) inject(ctx context.Context, f Fault, round int) (*FaultRecord, int, error) {
	rec := &FaultRecord{Kind: f, Node: -1}
	leader := r.mustLeader(ctx)
	pick := func() int { // a follower
		o := r.others(leader)
		return o[r.rng.IntN(len(o))]
	}
	var err error
	switch f {
	case KillLeader, KillFollower, FreezeLeader, WipeNode:
		victim := leader
		if f == KillFollower || (f == WipeNode && round%2 == 1) {
			victim = pick()
		}
		rec.Node = victim
		// The clock starts before the command: docker's own latency counts
		// against the cluster, never for it.
		rec.At = time.Now()
		switch f {
		case FreezeLeader:
			err = r.t.Freeze(ctx, victim)
		default:
			err = r.t.Kill(ctx, victim)
		}
		rec.Command = time.Since(rec.At)
		if err != nil {
			return rec, 0, err
		}
		if f == WipeNode {
			if err := r.t.Wipe(ctx, victim); err != nil {
				return rec, 0, err
			}
		}
		wait := r.measure(ctx, rec.At, r.others(victim), rec)
		d, note := wait()
		rec.Unavailable, rec.Note = append(rec.Unavailable, d), note
		if err := r.holdUntil(ctx, rec.At); err != nil {
			return rec, 0, err
		}
		rec.End = time.Now()
		if f == FreezeLeader {
			err = r.t.Thaw(ctx, victim)
		} else {
			err = r.t.Start(ctx, victim)
		}
		return rec, r.others(victim)[0], err

	case PartitionLeader:
		victim := leader
		rec.Node = victim
		rec.At = time.Now()
		if err := r.t.Isolate(ctx, victim); err != nil {
			return rec, 0, err
		}
		rec.Command = time.Since(rec.At)
		// Keep writing to the cut-off node the whole time: none of it may
		// be acknowledged until the partition heals.
		healed := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		imapRng := mrand.New(mrand.NewPCG(r.rng.Uint64(), 99))
		go func() {
			defer wg.Done()
			rng := imapRng
			r.work.imapWorkerOn(ctx, r.work.users[0], victim, healed, rng)
		}()
		for k := range 6 {
			wg.Add(1)
			rng := mrand.New(mrand.NewPCG(r.rng.Uint64(), uint64(k)))
			go func() {
				defer wg.Done()
				for {
					r.work.gate.RLock()
					r.work.sendTo(ctx, victim, rng)
					r.work.gate.RUnlock()
					// About ten attempts a second each: enough to prove the
					// point without flooding the cut-off node's log.
					select {
					case <-healed:
						return
					case <-ctx.Done():
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}()
		}
		wait := r.measure(ctx, rec.At, r.others(victim), rec)
		d, note := wait()
		rec.Unavailable, rec.Note = append(rec.Unavailable, d), note
		// Long enough for the cut-off side to give up on its writes.
		hold := max(r.opts.Hold, r.opts.PartitionHold)
		if err := pause(ctx, time.Until(rec.At.Add(hold))); err != nil {
			return rec, 0, err
		}
		rec.End = time.Now()
		err := r.t.Rejoin(ctx, victim)
		close(healed)
		// Attempts still in flight at the heal may be answered either way
		// later; what matters is that nothing was acknowledged before it.
		rec.finish = func() {
			wg.Wait()
			cut := r.ledger.attemptStats(victim, rec.At, rec.End)
			cut.IMAPWrites, cut.IMAPAcked = r.ledger.imapWritesAt(victim, rec.At.Add(rec.Command), rec.End)
			// Writes sent before the disconnect command returned may have
			// committed legitimately: the cut starts when it has.
			acks := r.ledger.cutoffAcks(victim, rec.At.Add(rec.Command), rec.End)
			for _, v := range acks {
				r.ledger.violate(VCutoffAck, "%s", v)
			}
			cut.AckedWithin = len(acks)
			rec.Cutoff = &cut
		}
		return rec, r.others(victim)[0], err

	case RollingRestart:
		for i := range r.t.Nodes() {
			t0 := time.Now()
			if rec.At.IsZero() {
				rec.At = t0
			}
			wait := r.measure(ctx, t0, r.others(i), rec)
			if err := r.t.Restart(ctx, i); err != nil {
				return rec, 0, err
			}
			d, note := wait()
			rec.Unavailable = append(rec.Unavailable, d)
			if note != "" {
				rec.Note = note
			}
			if _, _, err := r.admin.waitHealthy(ctx, r.opts.HealTimeout); err != nil {
				r.ledger.violate(VUnhealthy, "rolling restart after %s: %v", nodeName(i), err)
			}
		}
		rec.End = time.Now()
		return rec, leader, nil
	}
	return rec, 0, fmt.Errorf("unknown fault %q", f)
}
