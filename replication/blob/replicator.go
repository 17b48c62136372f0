package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Membership is the slice of cluster membership the blob layer needs.
type Membership interface {
	// LiveMembers are the members currently believed alive, self included.
	LiveMembers() []Member
	// Self is this node.
	Self() Member
}

// KnownMembers may be implemented by a Membership to name members that are
// not currently believed alive (gossip can lag behind a healed partition).
// Reads that find no live holder try them too.
type KnownMembers interface {
	KnownMembers() []Member
}

// References is the slice of the mailbox state the blob layer needs.
//
// Both methods must answer from state that has caught up (applied the
// committed log, or a restored snapshot): an empty or half-restored view
// would make every old blob look unreferenced to GC.
type References interface {
	// ForEachReferenced calls fn for every blob referenced by any message.
	ForEachReferenced(ctx context.Context, fn func(id ID) error) error
	// IsReferenced reports whether any message references id.
	IsReferenced(id ID) bool
}

// ReplicatorOptions tune a Replicator. The zero value is usable.
type ReplicatorOptions struct {
	// Replicas is R, the number of copies wanted (default 3). It must not
	// exceed the number of nodes: Replicate needs W = R/2+1 distinct copies.
	Replicas int
	// ClusterSize, if set, caps R at the number of nodes in the cluster
	// (counted by the caller, dead members included), so a small cluster
	// still acknowledges while a larger one keeps its full count.
	ClusterSize func() int
	// RepairInterval: pause between repair passes (default 1m).
	RepairInterval time.Duration
	// ScrubInterval: pause between full scrub passes (default 6h).
	ScrubInterval time.Duration
	// ScrubBytesPerSecond bounds how fast scrub reads stored bytes (default 8 MiB/s).
	ScrubBytesPerSecond int64
	// GCInterval: pause between garbage collections (default 10m). The first
	// one runs one interval after Run starts.
	GCInterval time.Duration
	// PushTimeout bounds each push, including those that continue in the
	// background after Replicate returned (default 2m).
	PushTimeout time.Duration
	// FetchTimeout bounds each fetch attempt from one peer (default 2m).
	FetchTimeout time.Duration
	// RepairConcurrency: parallel fetches during repair (default 4).
	RepairConcurrency int
	// MaxPushes bounds pushes in flight, foreground and background (default 256).
	MaxPushes int
	// MaxRepairBatch bounds the blobs one repair pass fetches; a pass that
	// found more starts the next pass at once (default 65536).
	MaxRepairBatch int
	Logger         *slog.Logger
}

func (o ReplicatorOptions) withDefaults() ReplicatorOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Replicas <= 0 {
		o.Replicas = 3
	}
	def(&o.RepairInterval, time.Minute)
	def(&o.ScrubInterval, 6*time.Hour)
	def(&o.GCInterval, 10*time.Minute)
	def(&o.PushTimeout, 2*time.Minute)
	def(&o.FetchTimeout, 2*time.Minute)
	if o.ScrubBytesPerSecond <= 0 {
		o.ScrubBytesPerSecond = 8 << 20
	}
	if o.RepairConcurrency <= 0 {
		o.RepairConcurrency = 4
	}
	if o.MaxPushes <= 0 {
		o.MaxPushes = 256
	}
	if o.MaxRepairBatch <= 0 {
		o.MaxRepairBatch = 65536
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats are the replicator's counters, for metrics and status.
type Stats struct {
	Held            int64     // blobs held locally now: the last walk's count, kept current by every store and delete since
	HeldAt          time.Time // the last walk that counted them (at start, then GC and scrub); zero until the first ends (Held is then unknown)
	UnderReplicated int64     // blobs this node is first in placement for with fewer than R copies on their placement members, as of the last repair pass
	CorruptFound    int64     // corrupt local copies found (scrub, reads), cumulative
	Repaired        int64     // copies fetched by repair, scrub or reads, cumulative
	Deleted         int64     // blobs removed by GC, cumulative
	PushFailures    int64     // failed pushes to peers, cumulative
	LastRepair      time.Time // end of the last complete repair pass
}

// Replicator keeps blobs at R copies: Replicate copies a new blob to its
// placement, Run repairs, scrubs and garbage-collects.
type Replicator struct {
	store   *Store
	client  *Client
	members Membership
	refs    References
	opts    ReplicatorOptions
	log     *slog.Logger

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	pushes   chan struct{} // semaphore
	kick     chan struct{} // buffered(1): run a repair pass soon

	under, corrupt, repaired, deleted, pushFailures atomic.Int64
	lastRepair                                      atomic.Int64 // unix nanos

	heldMu   sync.Mutex
	held     int64     // local blobs counted by the walk that began at heldAt
	heldAt   time.Time // zero until a walk has counted them
	heldBase int64     // the store's names added minus removed when that walk began

	handoffMu sync.Mutex
	handoff   map[string]map[ID]time.Time // member ID -> copies a push failed to make -> first failure
	handoffN  int
}

// NewReplicator ties the local store, the peer client, membership and
// references together. Close it to stop background pushes.
func NewReplicator(store *Store, client *Client, members Membership, refs References, opts ReplicatorOptions) *Replicator {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Replicator{
		store:    store,
		client:   client,
		members:  members,
		refs:     refs,
		opts:     opts,
		log:      opts.Logger,
		bgCtx:    ctx,
		bgCancel: cancel,
		pushes:   make(chan struct{}, opts.MaxPushes),
		kick:     make(chan struct{}, 1),
		handoff:  make(map[string]map[ID]time.Time),
	}
}

// Kick asks for a repair pass now rather than at the next interval: a
// member that came back lacks the bodies accepted while it was away.
func (r *Replicator) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// notReadyWarnAfter is how long a node may wait to catch up before the
// repair loop warns about it.
const notReadyWarnAfter = time.Minute

// repairRetry is how soon a failed repair pass (typically: this node has not
// caught up with the log yet, just after it started) runs again.
const repairRetry = 5 * time.Second

// Close cancels background pushes and waits for them.
func (r *Replicator) Close() {
	r.bgCancel()
	r.bg.Wait()
}

// Stats returns a snapshot of the counters.
func (r *Replicator) Stats() Stats {
	r.heldMu.Lock()
	s := Stats{
		Held:            r.held + r.names() - r.heldBase,
		HeldAt:          r.heldAt,
		UnderReplicated: r.under.Load(),
		CorruptFound:    r.corrupt.Load(),
		Repaired:        r.repaired.Load(),
		Deleted:         r.deleted.Load(),
		PushFailures:    r.pushFailures.Load(),
	}
	if s.HeldAt.IsZero() {
		s.Held = 0
	}
	r.heldMu.Unlock()
	if n := r.lastRepair.Load(); n != 0 {
		s.LastRepair = time.Unix(0, n)
	}
	return s
}

// names is the store's blob names added minus removed since it opened.
func (r *Replicator) names() int64 {
	st := r.store.Stats()
	return st.Added - st.Removed
}

// setHeld records the count of local blobs by a walk that began at start,
// when the store's names() was base, unless a walk that began later has
// already reported. Stats adds what was stored and deleted since: the
// figure is exact for a walk that ran alone, and off by at most the
// changes made during a walk otherwise, until the next walk.
func (r *Replicator) setHeld(n int64, start time.Time, base int64) {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	if start.Before(r.heldAt) {
		return
	}
	r.held, r.heldAt, r.heldBase = n, start, base
}

// countHeld counts the local blobs, so that status shows a number from the
// start rather than only after the first GC or scrub pass.
func (r *Replicator) countHeld(ctx context.Context) {
	start, base := time.Now(), r.names()
	var n int64
	err := r.store.walk(ctx, func(ID, fs.FileInfo) error { n++; return nil })
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("blob: counting stored bodies failed", "err", err)
		}
		return
	}
	r.setHeld(n, start, base)
}

// W is the number of durable copies on distinct nodes Replicate waits for.
func (r *Replicator) W() int { return r.replicas()/2 + 1 }

// replicas is R, capped at the cluster size.
func (r *Replicator) replicas() int {
	n := r.opts.Replicas
	if r.opts.ClusterSize != nil {
		if c := r.opts.ClusterSize(); c > 0 && c < n {
			n = c
		}
	}
	return n
}

// Replicate copies a blob this node has already Put to the other members of
// its placement, in parallel, and returns once W = R/2+1 durable copies exist
// on distinct nodes. The local copy always counts as one (it is durable and
// on this node, whether or not this node is in the placement; if it is not,
// the copy stays as an extra, since referenced blobs are never collected).
// If placement members fail, the next members in rendezvous order are tried,
// so W can still be reached; repair moves copies home later. Pushes still
// running when W is reached continue in the background (bounded by
// MaxPushes and PushTimeout) until R copies exist. If W is not reached before
// ctx ends, it returns ErrNotEnoughReplicas.
func (r *Replicator) Replicate(ctx context.Context, id ID) error {
	if !r.store.Has(id) {
		return fmt.Errorf("blob: replicate %s: %w locally (Put it first)", id, ErrNotFound)
	}
	return r.replicate(ctx, id, nil)
}

// Put is the delivery path, Store.Put and Replicate overlapped: it streams
// the body into the local store and, as soon as the file has its name,
// pushes it to the placement while the local flush runs (peers verify what
// they receive, so nothing depends on the local copy being durable yet). It
// returns once the local copy is durable and W copies exist in total, or
// ErrNotEnoughReplicas. A failed local flush fails the Put.
func (r *Replicator) Put(ctx context.Context, body io.Reader, maxSize int64) (ID, int64, error) {
	id, n, p, err := r.store.write(ctx, body, maxSize)
	if err != nil {
		return ID{}, 0, err
	}
	local := make(chan error, 1)
	go func() { local <- p.wait(ctx) }()
	if err := r.replicate(ctx, id, local); err != nil {
		return ID{}, 0, err
	}
	return id, n, nil
}

// replicate pushes id to its placement and waits for W copies. local, if
// not nil, reports when the local copy becomes durable; until then it does
// not count.
func (r *Replicator) replicate(ctx context.Context, id ID, local <-chan error) error {
	self := r.members.Self()
	live := r.members.LiveMembers()
	r.handOffUnseen(id, live)
	ranked := Placement(id, live, 1<<30) // placement order, then everyone else
	var targets, spares []Member
	for i, m := range ranked {
		switch {
		case m.ID == self.ID:
		case i < r.replicas():
			targets = append(targets, m)
		default:
			spares = append(spares, m)
		}
	}
	need := r.W() - 1 // copies still wanted besides ours

	results := make(chan error, len(targets)+len(spares))
	launch := func(m Member) {
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			results <- r.push(id, m)
		}()
	}
	for _, m := range targets {
		launch(m)
	}
	localDurable := local == nil
	inflight, acked := len(targets), 0
	var lastErr error
	for {
		if localDurable && acked >= need {
			return nil
		}
		for acked+inflight < need && len(spares) > 0 {
			launch(spares[0])
			spares = spares[1:]
			inflight++
		}
		have := acked
		if localDurable {
			have++
		}
		if acked+inflight < need {
			return fmt.Errorf("%w: %s has %d of %d copies: %v", ErrNotEnoughReplicas, id, have, r.W(), lastErr)
		}
		select {
		case err := <-local:
			if err != nil {
				return err
			}
			localDurable, local = true, nil
		case err := <-results:
			inflight--
			if err != nil {
				lastErr = err
				continue
			}
			acked++
		case <-ctx.Done():
			return fmt.Errorf("%w: %s has %d of %d copies: %v", ErrNotEnoughReplicas, id, have, r.W(), context.Cause(ctx))
		}
	}
}

// push copies id to m with its own deadline, detached from the caller, so it
// can finish after Replicate has returned.
func (r *Replicator) push(id ID, m Member) error {
	select {
	case r.pushes <- struct{}{}:
	case <-r.bgCtx.Done():
		return r.bgCtx.Err()
	}
	defer func() { <-r.pushes }()
	ctx, cancel := context.WithTimeout(r.bgCtx, r.opts.PushTimeout)
	defer cancel()
	err := r.client.Push(ctx, m.Addr, id)
	if err != nil {
		r.pushFailures.Add(1)
		r.log.Warn("blob: push failed", "id", id.String(), "peer", m.ID, "err", err)
		if r.bgCtx.Err() == nil {
			r.handOff(m.ID, id)
		}
	}
	return err
}

// Hinted handoff: a copy a push failed to make is retried every
// handoffInterval while its member is live, so a member cut off for a moment
// gets the bodies committed meanwhile in seconds instead of at its next
// repair pass. Bounded: what does not fit, or is not referenced within
// handoffUnreferenced, is left to repair.
const (
	handoffInterval     = 5 * time.Second
	handoffMax          = 100_000
	handoffMaxAge       = 30 * time.Minute
	handoffUnreferenced = 2 * time.Minute // the delivery that wrote it may not commit
)

func (r *Replicator) handOff(member string, id ID) {
	r.handoffMu.Lock()
	defer r.handoffMu.Unlock()
	ids := r.handoff[member]
	if ids == nil {
		ids = make(map[ID]time.Time)
		r.handoff[member] = ids
	}
	if _, ok := ids[id]; ok || r.handoffN >= handoffMax {
		return
	}
	ids[id] = time.Now()
	r.handoffN++
}

// handOffUnseen hands id off to every member of the cluster that gossip
// does not show live but that would be in its placement if it were. After
// a partition heals, gossip can lag behind: a body stored meanwhile would
// skip such a member without a failed push, and its commit comes after the
// repair pass the member's return kicked, so only the periodic repair would
// bring the copy. The handoff pushes it once the member is live again; for
// a body whose delivery never commits it is dropped unreferenced.
func (r *Replicator) handOffUnseen(id ID, live []Member) {
	km, ok := r.members.(KnownMembers)
	if !ok {
		return
	}
	isLive := make(map[string]bool, len(live))
	for _, m := range live {
		isLive[m.ID] = true
	}
	all := slices.Clone(live)
	for _, m := range km.KnownMembers() {
		if !isLive[m.ID] {
			all = append(all, m)
		}
	}
	if len(all) == len(live) {
		return
	}
	for _, m := range Placement(id, all, r.replicas()) {
		if !isLive[m.ID] {
			r.handOff(m.ID, id)
		}
	}
}

// retryHandoffs pushes the handed-off copies to the members that are live,
// stopping at a member's first failure until the next round.
func (r *Replicator) retryHandoffs(ctx context.Context) {
	for _, m := range r.members.LiveMembers() {
		r.handoffMu.Lock()
		var ids []ID
		for id, since := range r.handoff[m.ID] {
			referenced := r.refs.IsReferenced(id)
			switch {
			case time.Since(since) > handoffMaxAge,
				!referenced && time.Since(since) > handoffUnreferenced:
				r.dropHandoff(m.ID, id)
			case referenced:
				ids = append(ids, id)
			}
		}
		r.handoffMu.Unlock()
		for _, id := range ids {
			pctx, cancel := context.WithTimeout(ctx, r.opts.PushTimeout)
			err := r.client.Push(pctx, m.Addr, id)
			cancel()
			if err != nil {
				break
			}
			r.handoffMu.Lock()
			r.dropHandoff(m.ID, id)
			r.handoffMu.Unlock()
		}
	}
}

// dropHandoff forgets one handed-off copy; handoffMu is held.
func (r *Replicator) dropHandoff(member string, id ID) {
	if _, ok := r.handoff[member][id]; ok {
		delete(r.handoff[member], id)
		r.handoffN--
	}
}

// Open returns the verified body, fetching it from a peer (placement members
// first) when this node holds no healthy copy; the fetched copy is kept.
func (r *Replicator) Open(ctx context.Context, id ID) (*Body, error) {
	b, err := r.store.Open(ctx, id)
	if err == nil || !(errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt)) {
		return b, err
	}
	if errors.Is(err, ErrCorrupt) {
		r.corrupt.Add(1)
	}
	if ferr := r.fetchFromPeers(ctx, id); ferr != nil {
		return nil, fmt.Errorf("%w (and no peer could supply it: %v)", err, ferr)
	}
	r.repaired.Add(1)
	return r.store.Open(ctx, id)
}

// fetchFromPeers tries the placement members, then everyone else alive,
// then members not believed alive (if the Membership knows any).
func (r *Replicator) fetchFromPeers(ctx context.Context, id ID) error {
	self := r.members.Self()
	lastErr := fmt.Errorf("%w: no live peer to fetch from", ErrNotFound)
	candidates := Placement(id, r.members.LiveMembers(), 1<<30)
	live := len(candidates)
	if km, ok := r.members.(KnownMembers); ok {
		seen := make(map[string]bool, len(candidates))
		for _, m := range candidates {
			seen[m.ID] = true
		}
		for _, m := range km.KnownMembers() {
			if !seen[m.ID] {
				candidates = append(candidates, m)
			}
		}
	}
	for i, m := range candidates {
		if m.ID == self.ID {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		timeout := r.opts.FetchTimeout
		if i >= live {
			// Possibly dead: do not let an unanswered connect hold a reader.
			timeout = min(timeout, 10*time.Second)
		}
		fctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.client.Fetch(fctx, m.Addr, id)
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
	}
	return lastErr
}

// Run repairs, scrubs and collects garbage at the configured intervals until
// ctx ends. The first repair pass runs at once, a failed one again after a
// few seconds, and Kick starts one early; scrub and GC run after one
// interval.
func (r *Replicator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	// every runs pass whenever the timer fires or wake delivers; pass says
	// when it wants to run next.
	every := func(first time.Duration, wake <-chan struct{}, pass func(context.Context) (next time.Duration)) {
		defer wg.Done()
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-wake:
				t.Stop()
			}
			t.Reset(pass(ctx))
		}
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		r.countHeld(ctx)
	}()
	go every(handoffInterval, nil, func(ctx context.Context) time.Duration {
		r.retryHandoffs(ctx)
		return handoffInterval
	})
	var notReadySince time.Time // the repair loop's own; zero while ready
	go every(0, r.kick, func(ctx context.Context) time.Duration {
		more, err := r.repair(ctx)
		if !errors.Is(err, ErrNotReady) {
			notReadySince = time.Time{}
		}
		switch {
		case errors.Is(err, ErrNotReady) && ctx.Err() == nil:
			// Expected at every start until the state has caught up; worth
			// a warning only when it lasts.
			if notReadySince.IsZero() {
				notReadySince = time.Now()
			}
			level := slog.LevelInfo
			if time.Since(notReadySince) > notReadyWarnAfter {
				level = slog.LevelWarn
			}
			r.log.Log(ctx, level, "blob: repair pass waits for this node to catch up", "err", err, "since", notReadySince, "in", repairRetry)
			return min(repairRetry, r.opts.RepairInterval)
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("blob: repair pass failed; trying again soon", "err", err, "in", repairRetry)
			}
			return min(repairRetry, r.opts.RepairInterval)
		case more:
			return 0
		}
		return r.opts.RepairInterval
	})
	go every(r.opts.ScrubInterval, nil, func(ctx context.Context) time.Duration {
		if err := r.Scrub(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("blob: scrub pass failed", "err", err)
		}
		return r.opts.ScrubInterval
	})
	go every(r.opts.GCInterval, nil, func(ctx context.Context) time.Duration {
		if err := r.CollectGarbage(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("blob: gc pass failed", "err", err)
		}
		return r.opts.GCInterval
	})
	wg.Wait()
	return nil
}

// Repair runs one repair pass: every referenced blob whose placement (over
// live members) includes this node and that is missing here is fetched from
// a peer; for blobs this node is first in placement for, the other placement
// members are asked (batched) whether they hold theirs, which gives the
// under-replicated count.
func (r *Replicator) Repair(ctx context.Context) error {
	for {
		more, err := r.repair(ctx)
		if err != nil || !more {
			return err
		}
	}
}

func (r *Replicator) repair(ctx context.Context) (more bool, err error) {
	self := r.members.Self()
	live := r.members.LiveMembers()
	var (
		missing []ID
		primary []ID
		under   int64
	)
	err = r.refs.ForEachReferenced(ctx, func(id ID) error {
		pl := Placement(id, live, r.replicas())
		if len(pl) == 0 {
			return nil
		}
		if containsMember(pl, self.ID) && !r.store.Has(id) {
			if len(missing) < r.opts.MaxRepairBatch {
				missing = append(missing, id)
			} else {
				more = true
			}
		}
		if pl[0].ID == self.ID {
			primary = append(primary, id)
			if len(primary) == maxHoldsBatch {
				under += r.countUnderReplicated(ctx, primary, live)
				primary = primary[:0]
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("blob: repair: listing references: %w", err)
	}

	// Fetch what is missing here.
	jobs := make(chan ID)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < r.opts.RepairConcurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				if err := r.fetchFromPeers(ctx, id); err != nil {
					failed.Add(1)
					if ctx.Err() == nil {
						r.log.Warn("blob: repair cannot fetch", "id", id.String(), "err", err)
					}
					continue
				}
				r.repaired.Add(1)
			}
		}()
	}
	for _, id := range missing {
		select {
		case jobs <- id:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return false, err
	}

	// Count after fetching, so our own repaired copies are included.
	if len(primary) > 0 {
		under += r.countUnderReplicated(ctx, primary, live)
	}
	r.under.Store(under)
	r.lastRepair.Store(time.Now().UnixNano())
	if n := failed.Load(); n > 0 {
		return false, fmt.Errorf("blob: repair: %d blobs could not be fetched", n)
	}
	return more, nil
}

// countUnderReplicated asks each placement member which of ids it holds and
// returns how many ids have fewer than R copies. A member that does not
// answer counts as holding nothing.
func (r *Replicator) countUnderReplicated(ctx context.Context, ids []ID, live []Member) int64 {
	self := r.members.Self()
	copies := make([]int, len(ids))
	type ask struct {
		addr string
		ids  []ID
		idx  []int
	}
	asks := make(map[string]*ask)
	for i, id := range ids {
		for _, m := range Placement(id, live, r.replicas()) {
			if m.ID == self.ID {
				if r.store.Has(id) {
					copies[i]++
				}
				continue
			}
			a := asks[m.ID]
			if a == nil {
				a = &ask{addr: m.Addr}
				asks[m.ID] = a
			}
			a.ids = append(a.ids, id)
			a.idx = append(a.idx, i)
		}
	}
	for member, a := range asks {
		hctx, cancel := context.WithTimeout(ctx, r.opts.FetchTimeout)
		held, err := r.client.Holds(hctx, a.addr, a.ids)
		cancel()
		if err != nil {
			r.log.Warn("blob: repair cannot ask peer", "peer", member, "err", err)
			continue
		}
		for j, ok := range held {
			if ok {
				copies[a.idx[j]]++
			}
		}
	}
	var under int64
	for _, c := range copies {
		if c < r.replicas() {
			under++
		}
	}
	return under
}

func containsMember(ms []Member, id string) bool {
	for _, m := range ms {
		if m.ID == id {
			return true
		}
	}
	return false
}

// Scrub runs one scrub pass: every held copy is decompressed and hashed, at
// most ScrubBytesPerSecond of stored bytes. A corrupt copy is quarantined by
// the store and, if still referenced, fetched again from a peer.
func (r *Replicator) Scrub(ctx context.Context) error {
	pace := newPacer(r.opts.ScrubBytesPerSecond)
	start, base := time.Now(), r.names()
	// held counts the files the walk saw; quarantining a corrupt one and
	// fetching it again are changes the store counts on its own.
	var held int64
	err := r.store.walk(ctx, func(id ID, fi fs.FileInfo) error {
		held++
		err := r.store.Verify(ctx, id)
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrCorrupt):
			r.corrupt.Add(1)
			if r.refs.IsReferenced(id) {
				if ferr := r.fetchFromPeers(ctx, id); ferr != nil {
					r.log.Warn("blob: scrub cannot replace corrupt copy", "id", id.String(), "err", ferr)
				} else {
					r.repaired.Add(1)
				}
			}
		default:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Warn("blob: scrub cannot read copy", "id", id.String(), "err", err)
		}
		return pace.wait(ctx, fi.Size())
	})
	if err != nil {
		return fmt.Errorf("blob: scrub: %w", err)
	}
	r.setHeld(held, start, base)
	return nil
}

// CollectGarbage runs one GC pass (see Store.CollectGarbage).
func (r *Replicator) CollectGarbage(ctx context.Context) error {
	start, base := time.Now(), r.names()
	deleted, seen, err := r.store.CollectGarbage(ctx, r.refs.IsReferenced)
	r.deleted.Add(deleted)
	if err != nil {
		return err
	}
	// seen includes the deleted files; the store counted their removal.
	r.setHeld(seen, start, base)
	return nil
}

// pacer spreads work so that on average no more than rate bytes per second
// are processed, sleeping in slices of at least a few milliseconds.
type pacer struct {
	rate  float64
	start time.Time
	done  float64
}

func newPacer(rate int64) *pacer { return &pacer{rate: float64(rate), start: time.Now()} }

func (p *pacer) wait(ctx context.Context, n int64) error {
	p.done += float64(n)
	ahead := time.Duration(p.done/p.rate*float64(time.Second)) - time.Since(p.start)
	if ahead < 5*time.Millisecond {
		return nil
	}
	t := time.NewTimer(ahead)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
