package chaos

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Load shapes the workload.
type Load struct {
	Users       int           // accounts the senders deliver to; one IMAP worker each (default 3)
	Senders     int           // concurrent SMTP senders (default 3)
	Rate        float64       // messages per second, all senders together (default 15)
	IMAPWorkers int           // accounts that also get an IMAP worker (default Users)
	GiveUpAfter time.Duration // a refused message is retried for this long (default 3m)
	SMTP        smtpTimeouts  // client timeouts (default 15 s per command, 90 s for the reply to DATA)
	IMAPTimeout time.Duration // per IMAP command (default 30 s)
	// Outside is the share of new messages (0 to 1) that go to a recipient
	// outside the cluster, through authenticated submission as one of the
	// users; half of them go to that user as well (one message, one commit
	// for both). 0: none. The target must be an OutsideWorld then.
	Outside float64
	Seed    uint64
}

func (l Load) withDefaults() Load {
	if l.Users <= 0 {
		l.Users = 3
	}
	if l.Senders <= 0 {
		l.Senders = 3
	}
	if l.Rate <= 0 {
		l.Rate = 15
	}
	if l.IMAPWorkers <= 0 || l.IMAPWorkers > l.Users {
		l.IMAPWorkers = l.Users
	}
	if l.GiveUpAfter <= 0 {
		l.GiveUpAfter = 3 * time.Minute
	}
	if l.SMTP.Command <= 0 {
		l.SMTP = defaultSMTPTimeouts
	}
	if l.IMAPTimeout <= 0 {
		l.IMAPTimeout = 30 * time.Second
	}
	return l
}

// pendingSend is a message waiting for another attempt.
type pendingSend struct {
	m     *Message
	out   outgoing
	first time.Time
	due   time.Time
}

// Workload sends mail and works on mailboxes until stopped. Quiesce holds
// every worker between operations so a check sees a still picture.
type Workload struct {
	t      Target
	ledger *Ledger
	load   Load
	users  []account
	probe  account

	gate    sync.RWMutex // workers hold it shared around each operation; Quiesce takes it
	stop    chan struct{}
	noNew   chan struct{} // closed: senders only retry, never start new messages
	noNewMu sync.Once
	tokens  chan struct{}
	wg      sync.WaitGroup

	mu    sync.Mutex
	retry []pendingSend
}

func newWorkload(t Target, ledger *Ledger, load Load, users []account, probe account) *Workload {
	return &Workload{
		t: t, ledger: ledger, load: load, users: users, probe: probe,
		stop:   make(chan struct{}),
		noNew:  make(chan struct{}),
		tokens: make(chan struct{}, 8),
	}
}

// Start launches the senders, the rate limiter and the IMAP workers.
func (w *Workload) Start(ctx context.Context) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(time.Duration(float64(time.Second) / w.load.Rate))
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				select {
				case w.tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	for s := range w.load.Senders {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.sender(ctx, rand.New(rand.NewPCG(w.load.Seed, uint64(s)+1)))
		}()
	}
	for u := range w.load.IMAPWorkers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.imapWorker(ctx, w.users[u], rand.New(rand.NewPCG(w.load.Seed, uint64(u)+1000)))
		}()
	}
}

// Quiesce waits until no operation is in flight and holds every worker
// until the returned function is called.
func (w *Workload) Quiesce() (resume func()) {
	w.gate.Lock()
	return w.gate.Unlock
}

// Drain stops new messages and waits until every refused message has been
// delivered or given up, or until ctx ends.
func (w *Workload) Drain(ctx context.Context) {
	w.noNewMu.Do(func() { close(w.noNew) })
	for {
		w.mu.Lock()
		n := len(w.retry)
		w.mu.Unlock()
		if n == 0 || pause(ctx, 100*time.Millisecond) != nil {
			return
		}
	}
}

// Stop ends every worker after its current operation.
func (w *Workload) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *Workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// sender delivers new messages (and retries refused ones) to random nodes.
func (w *Workload) sender(ctx context.Context, rng *rand.Rand) {
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		case <-w.tokens:
		}
		w.gate.RLock()
		job, ok := w.nextJob(rng)
		if ok {
			w.send(ctx, job, rng.IntN(w.t.Nodes()))
		}
		w.gate.RUnlock()
	}
}

// nextJob returns a due retry, or else a new message.
func (w *Workload) nextJob(rng *rand.Rand) (pendingSend, bool) {
	now := time.Now()
	w.mu.Lock()
	for i, p := range w.retry {
		if !p.due.After(now) {
			w.retry = append(w.retry[:i], w.retry[i+1:]...)
			w.mu.Unlock()
			return p, true
		}
	}
	w.mu.Unlock()
	select {
	case <-w.noNew:
		return pendingSend{}, false
	default:
	}
	u := w.users[rng.IntN(len(w.users))]
	var out outgoing
	if w.load.Outside > 0 && rng.Float64() < w.load.Outside {
		id := w.ledger.nextID()
		// One recipient per message, at a few domains: the sink counts
		// transactions per recipient, so two at once are one message twice.
		seq, _, _ := strings.Cut(id, "@")
		rcpt := fmt.Sprintf("%s@outside%d.test", seq, 1+rng.IntN(3))
		out = newOutsideMessage(rng, id, u, rcpt, rng.IntN(2) == 0, messageSize(rng))
	} else {
		out = newMessage(rng, w.ledger.nextID(), u.Address, messageSize(rng))
	}
	m := w.ledger.add(out, false)
	return pendingSend{m: m, out: out, first: now}, true
}

// dial is where an attempt goes on node: the MX port, or the submissions
// port (implicit TLS) for a message that logs in.
func (w *Workload) dial(node int, out outgoing) (string, *tls.Config) {
	if out.submitted() {
		return w.t.SubmissionsAddr(node), w.t.ClientTLS()
	}
	return w.t.SMTPAddr(node), nil
}

// send makes one attempt and queues a retry when the message was refused.
func (w *Workload) send(ctx context.Context, job pendingSend, node int) Attempt {
	addr, tlsConfig := w.dial(node, job.out)
	a := deliver(context.WithoutCancel(ctx), addr, tlsConfig, job.out, w.load.SMTP)
	a.Node = node
	if w.ledger.attempt(job.m, a) {
		if time.Since(job.first) > w.load.GiveUpAfter {
			w.ledger.giveUp(job.m)
			return a
		}
		job.due = time.Now().Add(250 * time.Millisecond)
		w.mu.Lock()
		w.retry = append(w.retry, job)
		w.mu.Unlock()
	}
	return a
}

// sendTo delivers one new message to a fixed node (the cut-off prober).
func (w *Workload) sendTo(ctx context.Context, node int, rng *rand.Rand) Attempt {
	u := w.users[rng.IntN(len(w.users))]
	out := newMessage(rng, w.ledger.nextID(), u.Address, messageSize(rng))
	m := w.ledger.add(out, false)
	return w.send(ctx, pendingSend{m: m, out: out, first: time.Now()}, node)
}

// probeUntilAcked measures when node takes writes again: it starts a
// small delivery every probeEvery (at most probeInFlight at once, each a new
// message, never retried) and returns when the first one is acknowledged.
// Starting new attempts while older ones hang shows when writes work again,
// not how long one unlucky client waited (the report has that too).
func (w *Workload) probeUntilAcked(ctx context.Context, node int, rng *rand.Rand) (time.Time, error) {
	const (
		probeEvery    = 100 * time.Millisecond
		probeInFlight = 20
	)
	acked := make(chan time.Time, probeInFlight)
	slots := make(chan struct{}, probeInFlight)
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case at := <-acked:
			return at, nil
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case slots <- struct{}{}:
		}
		out := newMessage(rng, w.ledger.nextID(), w.probe.Address, 600)
		m := w.ledger.add(out, true)
		go func() {
			defer func() { <-slots }()
			w.gate.RLock()
			defer w.gate.RUnlock()
			a := deliver(context.WithoutCancel(ctx), w.t.SMTPAddr(node), nil, out, w.load.SMTP)
			a.Node = node
			if w.ledger.attempt(m, a) {
				w.ledger.giveUp(m) // a probe is never retried
			}
			if a.Outcome == OutcomeAcked {
				select {
				case acked <- a.End:
				default:
				}
			}
		}()
		select {
		case at := <-acked:
			return at, nil
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// imapWorker flags, moves and expunges the messages of one account, on
// random nodes, and keeps the ledger's expected state in step.
func (w *Workload) imapWorker(ctx context.Context, u account, rng *rand.Rand) {
	w.imapLoop(ctx, u, -1, nil, rng)
}

// imapWorkerOn is an IMAP worker that talks only to node, until until is
// closed (the cut-off node during a partition). It shares the account with
// the account's own worker: the ledger hands each message to one at a time.
func (w *Workload) imapWorkerOn(ctx context.Context, u account, node int, until <-chan struct{}, rng *rand.Rand) {
	w.imapLoop(ctx, u, node, until, rng)
}

func (w *Workload) imapLoop(ctx context.Context, u account, fixed int, until <-chan struct{}, rng *rand.Rand) {
	var s *imapSession
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	for !w.stopped() && ctx.Err() == nil {
		select {
		case <-until:
			return
		default:
		}
		w.gate.RLock()
		if s == nil || !s.usable() || (fixed < 0 && rng.IntN(20) == 0) {
			if s != nil {
				s.Close()
				s = nil
			}
			node := fixed
			if node < 0 {
				node = rng.IntN(w.t.Nodes())
			}
			var err error
			s, err = dialIMAP(ctx, node, w.t.IMAPSAddr(node), w.t.ClientTLS(), u.Address, u.Password, w.load.IMAPTimeout)
			if err != nil {
				s = nil
				w.gate.RUnlock()
				_ = pause(ctx, 100*time.Millisecond)
				continue
			}
		}
		w.imapRound(ctx, s, u, rng)
		w.gate.RUnlock()
		// Leave room for the senders: an IMAP round is far cheaper than a
		// delivery, and a mailbox emptier than its inflow keeps checks short.
		_ = pause(ctx, 20*time.Millisecond)
	}
}

// imapRound selects a mailbox, lists it, and runs a few operations.
func (w *Workload) imapRound(ctx context.Context, s *imapSession, u account, rng *rand.Rand) {
	mailbox := "INBOX"
	if rng.IntN(10) < 3 {
		mailbox = "Archive"
	}
	where := fmt.Sprintf("node%d (IMAP worker)", s.node+1)
	sel, err := s.selectMailbox(ctx, mailbox)
	if err != nil {
		return
	}
	w.ledger.observeValidity(where, u.Address, mailbox, sel.UIDValidity)
	items, err := s.list(ctx, false)
	if err != nil {
		return
	}
	present := make(map[string]imap.UID, len(items))
	twice := make(map[string]bool)
	for _, it := range items {
		w.ledger.observe(where, u.Address, mailbox, sel.UIDValidity, it.UID, it.ID)
		if _, ok := present[it.ID]; ok {
			twice[it.ID] = true
		}
		present[it.ID] = it.UID
	}
	// A message present twice (a duplicate the checker reports) has no one
	// state to track: leave both copies alone.
	for id := range twice {
		delete(present, id)
	}
	cands := w.ledger.candidates(u.Address, mailbox, present)
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	ops := 1 + rng.IntN(3)
	if len(cands) > 60 {
		ops += 3 // keep mailboxes small: more work when they grow
	}
	for _, c := range cands[:min(ops, len(cands))] {
		if !w.imapOperate(ctx, s, c, present[c.m.ID], mailbox, rng) {
			return
		}
	}
}

// imapOperate runs one operation on m and records its outcome. It returns
// false when the session is no longer usable.
func (w *Workload) imapOperate(ctx context.Context, s *imapSession, c candidate, uid imap.UID, mailbox string, rng *rand.Rand) bool {
	m := c.m
	before, ok := w.ledger.begin(c, mailbox)
	if !ok {
		return true // another worker got there first; its UID here may be stale
	}
	other := "Archive"
	if mailbox == "Archive" {
		other = "INBOX"
	}
	run := func(kind, detail string, op func() error) Outcome {
		a := Attempt{Node: s.node, Start: time.Now(), Commit: time.Now()}
		err := op()
		a.End, a.Outcome = time.Now(), classify(err)
		if err != nil {
			a.Reply = err.Error()
		}
		w.ledger.imapOp(kind, detail, m.ID, a)
		return a.Outcome
	}
	var after State
	var o Outcome
	switch n := rng.IntN(100); {
	case n < 40:
		t := trackedFlags[rng.IntN(3)] // \Seen, \Flagged or \Answered
		add := before.Flags&t.bit == 0
		after = State{Mailbox: mailbox, Flags: before.Flags ^ t.bit}
		o = run("store", fmt.Sprintf("UID %d %s %s in %s", uid, map[bool]string{true: "+", false: "-"}[add], t.flag, mailbox), func() error { return s.storeFlags(ctx, uid, add, t.flag) })
	case n < 70:
		after = State{Mailbox: other, Flags: before.Flags}
		o = run("move", fmt.Sprintf("UID %d %s -> %s", uid, mailbox, other), func() error { return s.move(ctx, uid, other) })
	default:
		if before.Flags&FlagDeleted == 0 {
			after = State{Mailbox: mailbox, Flags: before.Flags | FlagDeleted}
			o = run("store", fmt.Sprintf("UID %d +\\Deleted in %s", uid, mailbox), func() error { return s.storeFlags(ctx, uid, true, imap.FlagDeleted) })
			if o != OutcomeAcked {
				break
			}
			w.ledger.finish(m, after, o)
			before = w.ledger.again(m)
		}
		after = State{}
		defer func() {
			if o == OutcomeAcked {
				w.ledger.expunged(m, mailbox, uid)
			}
		}()
		o = run("expunge", fmt.Sprintf("UID %d in %s", uid, mailbox), func() error { return s.expunge(ctx, uid) })
	}
	w.ledger.finish(m, after, o)
	return o != OutcomeUnknown && s.usable()
}
