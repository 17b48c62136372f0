package node

import (
	"context"
	"slices"
	"sync"
	"time"
)

// leaderTask is one piece of cluster-wide work that the leader, and only
// the leader, does. run works until its context ends, which happens when
// this node stops leading or stops altogether.
type leaderTask struct {
	name string
	run  func(ctx context.Context)
}

// leaderTasks is the leader's work, one entry per task. Work that must
// happen once for the whole cluster (the outbound queue's scheduler,
// rebalancing) is added here, and nowhere checks IsLeader on its own.
func (n *Node) leaderTasks() []leaderTask {
	return []leaderTask{
		// Make the Raft configuration follow gossip: add, promote, remove.
		{name: "reconcile", run: n.reconcileTask},
		// Forget blob records whose bodies no message references any more.
		{name: "purge", run: func(ctx context.Context) {
			n.store.PurgeLoop(ctx, n.cfg.GCGrace, max(n.cfg.GCGrace/4, time.Second))
		}},
		// Advance the outbound queue's clock (leases, due times) with the
		// leader's time while the queue has entries.
		{name: "queue-clock", run: n.queueClockTask},
		// Give local domains without DKIM keys a pair (outbound.go).
		{name: "dkim-keys", run: n.dkimKeysTask},
	}
}

// leadership is what the leadership loop shares with status.
type leadership struct {
	mu      sync.Mutex
	running []string // names of the leader tasks running now
}

// LeaderTasks names the leader tasks running on this node now: all of
// them while it leads (once it has caught up), none otherwise.
func (n *Node) LeaderTasks() []string {
	n.leading.mu.Lock()
	defer n.leading.mu.Unlock()
	return slices.Clone(n.leading.running)
}

// leadershipLoop starts the leader tasks when this node becomes leader and
// cancels them, waiting until they have returned, when it stops leading: a
// task never runs twice at once on one node, and runs on a node only while
// Raft calls it leader, for one term. Raft's leadership notifications drive
// it; a slow tick covers any change seen between two of them.
func (n *Node) leadershipLoop(ctx context.Context) {
	tasks := n.leaderTasks()
	tick := time.NewTicker(n.cfg.Profile.Reconcile)
	defer tick.Stop()
	var (
		stop func() // set while the tasks run
		term uint64 // the term they were started in
	)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		changed := n.cons.LeadershipChanged()
		leading := n.cons.IsLeader()
		var now uint64
		if leading {
			now = n.cons.Status().Term
		}
		// Tasks belong to one term: a node that lost leadership and won it
		// back restarts them, since another leader may have run them since.
		if stop != nil && (!leading || now != term) {
			stop()
			stop = nil
		}
		if leading && stop == nil {
			stop, term = n.startLeaderTasks(ctx, tasks), now
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// startLeaderTasks runs every task under one context, once this node has
// applied everything committed before it became leader (a read barrier):
// tasks read the state the cluster agreed on, never an older one. The
// returned stop cancels them and waits for them.
func (n *Node) startLeaderTasks(ctx context.Context, tasks []leaderTask) (stop func()) {
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n.cons.ReadBarrier(tctx) != nil || !n.cons.IsLeader() {
			// No quorum yet, or leadership went meanwhile (then the loop
			// cancels us).
			select {
			case <-tctx.Done():
				return
			case <-time.After(n.cfg.Profile.Raft.HeartbeatTimeout):
			}
		}
		names := make([]string, 0, len(tasks))
		for _, t := range tasks {
			names = append(names, t.name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.run(tctx)
			}()
		}
		n.leading.mu.Lock()
		n.leading.running = names
		n.leading.mu.Unlock()
		n.log.Info("leading: leader tasks started", "tasks", names)
	}()
	return func() {
		cancel()
		wg.Wait()
		n.leading.mu.Lock()
		wasRunning := len(n.leading.running) > 0
		n.leading.running = nil
		n.leading.mu.Unlock()
		if wasRunning {
			n.log.Info("no longer leading: leader tasks stopped")
		}
	}
}
