package dispatch

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/mailauth/dkim"
	"github.com/mailcluster/mailcluster/outbound"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// maxGroup caps the recipients of one Send (the client splits further by
// the remote's limits).
const maxGroup = 100

// reportAttempts bounds the retries of a report that could not commit.
const reportAttempts = 3

// Worker sends this node's share of the outbound queue. Run it once per
// node.
type Worker struct {
	cfg   Config
	log   *slog.Logger
	store *replication.Store
	m     *metrics

	slots chan struct{} // one per Send in progress (Concurrency)
	freed chan struct{} // buffered(1): a slot was released

	mu       sync.Mutex
	inflight map[state.QueueID]bool // claimed or being claimed by this worker
	wg       sync.WaitGroup
}

// New makes a Worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:      cfg,
		log:      cfg.Logger,
		store:    cfg.Store,
		slots:    make(chan struct{}, cfg.Concurrency),
		freed:    make(chan struct{}, 1),
		inflight: make(map[state.QueueID]bool),
	}
	w.m, err = newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Run works until ctx ends, then waits for the attempts in progress (their
// contexts end with ctx: connections are dropped without the final dot
// and nothing is reported, as if the process had died; their leases run
// out and another node retries).
func (w *Worker) Run(ctx context.Context) {
	sub := w.store.Feed().SubscribeQueue()
	defer sub.Close()
	tick := time.NewTicker(w.cfg.Poll)
	defer tick.Stop()
	defer w.wg.Wait()
	for {
		w.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
			sub.Next()
		case <-tick.C:
		case <-w.freed:
		}
	}
}

// groupKey: entries that go in one Send.
type groupKey struct {
	blob              state.BlobID
	from, domain      string
	ret, envID        string
	utf8, adminBounce bool
}

func keyOf(e *state.QueueEntry) groupKey {
	return groupKey{blob: e.Blob, from: e.From, domain: domainOf(e.To), ret: e.Ret, envID: e.EnvID, utf8: e.UTF8, adminBounce: e.Bounce}
}

// owner is the member the group hashes to (rendezvous hashing): each
// node takes its share, and a group's recipients stay together.
func owner(members []string, k groupKey) string {
	var best string
	var bestH uint64
	for _, m := range members {
		h := fnv.New64a()
		_, _ = io.WriteString(h, m)
		_, _ = h.Write([]byte{0})
		_, _ = h.Write(k.blob[:])
		_, _ = io.WriteString(h, k.from)
		_, _ = h.Write([]byte{0})
		_, _ = io.WriteString(h, k.domain)
		if v := h.Sum64(); best == "" || v > bestH || (v == bestH && m < best) {
			best, bestH = m, v
		}
	}
	return best
}

// scan claims what this node should send now, as far as it has free
// slots.
func (w *Worker) scan(ctx context.Context) {
	free := cap(w.slots) - len(w.slots)
	if free <= 0 || ctx.Err() != nil {
		return
	}
	due, now, err := w.store.QueueDue(ctx, 4*cap(w.slots)+64)
	if err != nil || len(due) == 0 {
		return
	}
	members := w.cfg.Members()
	var order []groupKey
	groups := map[groupKey][]state.QueueEntry{}
	w.mu.Lock()
	for _, e := range due {
		if w.inflight[e.ID] {
			continue
		}
		k := keyOf(&e)
		if len(groups[k]) >= maxGroup {
			continue // the next scan
		}
		if owner(members, k) != w.cfg.Node {
			// Another node's share, unless it stayed due too long (its
			// owner may be dead while gossip still calls it alive).
			if now-max(e.NextAttempt, e.Lease.Until) < int64(w.cfg.Steal) {
				continue
			}
		}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e)
	}
	var start [][]state.QueueEntry
	for _, k := range order {
		if len(start) >= free {
			break
		}
		for _, e := range groups[k] {
			w.inflight[e.ID] = true
		}
		start = append(start, groups[k])
	}
	w.mu.Unlock()
	for _, g := range start {
		w.slots <- struct{}{} // never blocks: at most free groups
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer w.release(g)
			w.attempt(ctx, g)
		}()
	}
}

func (w *Worker) release(g []state.QueueEntry) {
	w.mu.Lock()
	for _, e := range g {
		delete(w.inflight, e.ID)
	}
	w.mu.Unlock()
	<-w.slots
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

// attempt claims one group, sends it and reports the outcomes.
func (w *Worker) attempt(ctx context.Context, g []state.QueueEntry) {
	ids := make([]state.QueueID, len(g))
	for i, e := range g {
		ids[i] = e.ID
	}
	sent := time.Now()
	claim, err := w.store.QueueClaim(ctx, w.cfg.Node, ids, w.cfg.Lease)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Debug("outbound: claim failed", "ids", len(ids), "err", err)
		}
		return
	}
	granted := map[state.QueueID]bool{}
	for _, id := range claim.Granted {
		granted[id] = true
	}
	var held []state.QueueEntry
	for _, e := range g {
		if granted[e.ID] {
			e.Attempts++ // the claim counted this attempt
			held = append(held, e)
		}
	}
	if len(held) == 0 {
		return
	}
	heldIDs := make([]state.QueueID, len(held))
	for i, e := range held {
		heldIDs[i] = e.ID
	}

	var results []outbound.Result
	domain := domainOf(held[0].To)
	if held[0].Bounce {
		results = make([]outbound.Result, len(held))
		for i, e := range held {
			results[i] = outbound.Result{Rcpt: e.To, Permanent: true, Code: 550, Enhanced: "5.0.0", Text: "returned to the sender by the postmaster"}
		}
	} else {
		sctx, cancel := context.WithCancel(ctx)
		keep := newLeaseKeeper(w, claim.Token, heldIDs, sent, cancel)
		done := make(chan struct{})
		go func() { defer close(done); keep.run(sctx) }()
		msg, err := w.message(sctx, held)
		if err != nil {
			results = make([]outbound.Result, len(held))
			for i, e := range held {
				results[i] = outbound.Result{Rcpt: e.To, Code: 451, Enhanced: "4.3.0", Text: "local error: " + err.Error()}
			}
		} else {
			results = w.cfg.Client.Send(sctx, domain, msg, keep.check)
		}
		cancel()
		<-done
	}
	if ctx.Err() != nil {
		// The node is stopping: report nothing, as a crash would not.
		return
	}

	qnow := w.store.QueueNow(ctx)
	outcomes := make([]state.QueueOutcome, len(held))
	for i, e := range held {
		r := results[i]
		outcomes[i] = w.outcome(ctx, &e, r, qnow)
		w.log.Info("outbound attempt", "queue_id", e.ID.String(), "rcpt", e.To, "host", r.Host,
			"reply", outcomes[i].Reply, "outcome", kindName(outcomes[i].Kind), "attempt", e.Attempts)
	}
	w.report(ctx, claim.Token, outcomes, domain)
}

// report commits the outcomes, retrying a little when the cluster could
// not commit them (the lease still fences a late one).
func (w *Worker) report(ctx context.Context, token uint64, outcomes []state.QueueOutcome, domain string) {
	var res state.ReportResult
	var err error
	for try := 0; try < reportAttempts; try++ {
		if res, err = w.store.QueueReport(ctx, token, outcomes); err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.cfg.Lease / 10):
		}
	}
	if err != nil {
		w.log.Warn("outbound: report not committed; the lease will run out and the entries be retried", "token", token, "err", err)
		return
	}
	for i, o := range outcomes {
		if i < len(res.Outcomes) && res.Outcomes[i].Err() != nil {
			w.log.Warn("outbound: outcome refused", "queue_id", o.ID.String(), "err", res.Outcomes[i].Err())
			continue
		}
		w.m.attempt(kindName(o.Kind), domain)
		if o.Bounce != nil {
			w.m.dsn(o.Bounce.Kind)
		}
	}
}

func kindName(k state.OutcomeKind) string {
	switch k {
	case state.OutcomeDelivered:
		return "delivered"
	case state.OutcomeDeferred:
		return "deferred"
	}
	return "failed"
}

// outcome classifies one recipient's result and makes its DSN.
func (w *Worker) outcome(ctx context.Context, e *state.QueueEntry, r outbound.Result, qnow int64) state.QueueOutcome {
	o := state.QueueOutcome{ID: e.ID, Reply: r.Reply(), Host: r.Host}
	expired := e.Expires > 0 && qnow >= e.Expires
	switch {
	case r.Delivered:
		o.Kind = state.OutcomeDelivered
	case r.Permanent || expired:
		o.Kind = state.OutcomeFailed
		status := r.Enhanced
		if !r.Permanent {
			o.Reply = "expired after " + strconv.Itoa(e.Attempts) + " attempts; last: " + r.Reply()
			status = "4.4.7"
		}
		var err error
		if o.Bounce, err = w.dsn(ctx, e, "failed", status, r, o.Reply, 0); err != nil {
			// The sender must hear of it: keep the entry and try again
			// soon, rather than remove it without the notice.
			o.Kind, o.Bounce = state.OutcomeDeferred, nil
			o.NextAttempt = qnow + int64(w.cfg.Retry[0])
		}
	default:
		o.Kind = state.OutcomeDeferred
		step := w.cfg.Retry[min(max(e.Attempts-1, 0), len(w.cfg.Retry)-1)]
		o.NextAttempt = qnow + int64(step)
		if e.Expires > 0 && o.NextAttempt > e.Expires {
			o.NextAttempt = e.Expires // the last attempt at expiry, then the failure DSN
		}
		if e.DelayDSNAt > 0 && !e.DelayDSNSent && qnow >= e.DelayDSNAt {
			o.Bounce, _ = w.dsn(ctx, e, "delayed", r.Enhanced, r, r.Reply(), e.Expires) // a later attempt sends it
		}
	}
	return o
}

// message builds the outbound message of a group: its body, its DKIM
// signatures and whether it has 8-bit content.
func (w *Worker) message(ctx context.Context, held []state.QueueEntry) (outbound.Message, error) {
	e := held[0]
	m := outbound.Message{From: e.From, Ret: e.Ret, EnvID: e.EnvID, Size: e.Size, UTF8: e.UTF8}
	for _, h := range held {
		m.Rcpts = append(m.Rcpts, outbound.Rcpt{Addr: h.To, ORCPT: h.ORCPT, Notify: h.Notify})
	}
	blobID := e.Blob
	m.Body = func() (io.Reader, error) {
		b, err := w.store.OpenBody(ctx, blobID)
		if err != nil {
			return nil, err
		}
		return readCloser{withoutReturnPath(b), b}, nil
	}

	b, err := w.store.OpenBody(ctx, blobID)
	if err != nil {
		return m, err
	}
	defer b.Close()
	body := withoutReturnPath(b)
	var det eightBit
	if domain := w.signingDomain(ctx, &e); domain != "" {
		keys, err := w.store.DKIMSigningKeys(ctx, domain)
		if err == nil && len(keys) > 0 {
			hdr, err := dkim.Sign(io.TeeReader(body, &det), domain, keys)
			if err != nil {
				// Sent unsigned rather than never: a receiver may still take it.
				w.log.Warn("outbound: DKIM signing failed; sending unsigned", "domain", domain, "err", err)
			} else {
				m.Header = hdr
			}
		}
	}
	if _, err := io.Copy(&det, body); err != nil {
		return m, err
	}
	m.EightBit = det.found
	return m, nil
}

// signingDomain is the domain whose keys sign a message: the envelope
// sender's (an SRS address is the forwarding domain's), or for the null
// sender the header From's, when that domain is local.
func (w *Worker) signingDomain(ctx context.Context, e *state.QueueEntry) string {
	domain := domainOf(e.From)
	if e.From == "" {
		if s, err := w.store.Summary(ctx, e.Blob); err == nil && len(s.Envelope.From) > 0 {
			domain = strings.ToLower(s.Envelope.From[0].Host)
		}
	}
	if domain == "" || !w.store.IsLocalDomain(ctx, domain) {
		return ""
	}
	return domain
}

// eightBit notes whether anything written to it has a byte over 127.
type eightBit struct{ found bool }

func (d *eightBit) Write(p []byte) (int, error) {
	if !d.found {
		for _, c := range p {
			if c >= 0x80 {
				d.found = true
				break
			}
		}
	}
	return len(p), nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// leaseKeeper renews a claim while its Send runs and answers the fencing
// check: the lease may be gone once this node's own monotonic clock has
// passed the last renewal that was accepted (timed from when it was sent,
// before the leader applied it) plus the lease, less a margin for the
// queue clock's tick and for clock rates.
type leaseKeeper struct {
	w      *Worker
	token  uint64
	ids    []state.QueueID
	cancel context.CancelFunc

	mu     sync.Mutex
	lastOK time.Time
	lost   bool
}

var (
	errLeaseLost    = errors.New("dispatch: the lease was lost (another claim holds an entry)")
	errLeaseExpired = errors.New("dispatch: the lease may have run out (no renewal in time): not committing")
)

func newLeaseKeeper(w *Worker, token uint64, ids []state.QueueID, claimed time.Time, cancel context.CancelFunc) *leaseKeeper {
	return &leaseKeeper{w: w, token: token, ids: ids, cancel: cancel, lastOK: claimed}
}

func (k *leaseKeeper) margin() time.Duration {
	return max(k.w.cfg.Lease/5, min(time.Second, k.w.cfg.Lease/3))
}

// check is the beforeCommit of a Send.
func (k *leaseKeeper) check() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.lost:
		return errLeaseLost
	case time.Since(k.lastOK) >= k.w.cfg.Lease-k.margin():
		return errLeaseExpired
	}
	return nil
}

func (k *leaseKeeper) run(ctx context.Context) {
	every := k.w.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, every)
		held, err := k.w.store.QueueRenew(rctx, k.token, k.ids, k.w.cfg.Lease)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				k.w.log.Warn("outbound: lease renewal failed", "token", k.token, "err", err)
			}
			continue
		}
		k.mu.Lock()
		if len(held) < len(k.ids) {
			k.lost = true
		} else {
			k.lastOK = sent
		}
		lost := k.lost
		k.mu.Unlock()
		if lost {
			k.w.log.Warn("outbound: lease lost; abandoning the attempt", "token", k.token)
			k.cancel()
			return
		}
	}
}
