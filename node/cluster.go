package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
)

// ErrUnsafeLeave refuses a leave that would cost the cluster its quorum.
var ErrUnsafeLeave = errors.New("leaving now would leave the cluster without a quorum of live voters")

// catchUpSlack is how far (in log entries) a nonvoter may trail the leader's
// commit index and still be promoted to voter.
const catchUpSlack = 256

// bootstrapLoop runs until this node has Raft state: it bootstraps when
// bootstrap-expect fresh nodes see each other, and otherwise waits for a
// leader to add it.
func (n *Node) bootstrapLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.Profile.Reconcile)
	defer tick.Stop()
	warned := false
	for {
		if n.cons.HasState() {
			if err := n.gossip.setRecord(func(r *Record) { r.Fresh = false }); err != nil {
				n.log.Warn("could not publish that this node has joined", "err", err)
			}
			return
		}
		if n.cfg.BootstrapExpect > 0 {
			if servers, ok := n.bootstrapServers(&warned); ok {
				n.log.Info("bootstrapping a new cluster", "servers", len(servers))
				if err := n.cons.Bootstrap(servers); err != nil {
					n.log.Error("bootstrap failed", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.gossip.changed:
			n.reconcileNow()
		}
	}
}

// bootstrapServers returns the server list to bootstrap with, once exactly
// bootstrap-expect fresh members agree and none already has a cluster.
func (n *Node) bootstrapServers(warned *bool) ([]consensus.Server, bool) {
	members := n.gossip.members()
	var servers []consensus.Server
	for _, m := range members {
		if !m.Fresh {
			// Someone already runs a cluster: wait to be added to it.
			return nil, false
		}
		if m.Expect != n.cfg.BootstrapExpect {
			if !*warned {
				n.log.Warn("members disagree on bootstrap_expect; not bootstrapping", "member", m.ID, "theirs", m.Expect, "ours", n.cfg.BootstrapExpect)
				*warned = true
			}
			return nil, false
		}
		servers = append(servers, consensus.Server{ID: m.ID, Address: m.Cluster, Voter: true})
	}
	if len(servers) < n.cfg.BootstrapExpect {
		return nil, false
	}
	if len(servers) > n.cfg.BootstrapExpect {
		if !*warned {
			n.log.Error("more fresh nodes than bootstrap_expect see each other; not bootstrapping", "seen", len(servers), "expect", n.cfg.BootstrapExpect)
			*warned = true
		}
		return nil, false
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	return servers, true
}

// reconcileNow wakes the reconcile task without blocking (if this node is
// not leading, the wake-up waits for the task to start).
func (n *Node) reconcileNow() {
	select {
	case n.reconcileCh <- struct{}{}:
	default:
	}
}

// watchLoop runs on every node: it kicks a blob repair pass when this node
// may have missed bodies (a member came back, the leader changed, contact
// with the leader returned), and wakes the reconcile task on a gossip
// change.
func (n *Node) watchLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.Profile.Reconcile)
	defer tick.Stop()
	var watch repairWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if watch.changed(n.cons.Status(), n.cfg.Profile.Raft.HeartbeatTimeout) {
				n.kickRepair(ctx)
			}
		case <-n.gossip.changed:
			// A member that came back lacks the bodies accepted while it
			// was away; so may this node, if it was the one away.
			n.kickRepair(ctx)
			n.reconcileNow()
		}
	}
}

// reconcileTask makes the Raft configuration follow gossip. It is a leader
// task: it runs only while this node leads.
func (n *Node) reconcileTask(ctx context.Context) {
	tick := time.NewTicker(n.cfg.Profile.Reconcile)
	defer tick.Stop()
	failedSince := make(map[string]time.Time)
	for {
		n.reconcile(ctx, failedSince)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.reconcileCh:
		}
	}
}

func (n *Node) reconcile(ctx context.Context, failedSince map[string]time.Time) {
	servers, err := n.cons.Configuration()
	if err != nil {
		return
	}
	byID := make(map[string]consensus.Server, len(servers))
	for _, s := range servers {
		byID[s.ID] = s
	}
	alive := make(map[string]member)
	for _, m := range n.gossip.members() {
		alive[m.ID] = m
	}

	for _, m := range alive {
		if m.ID == n.cfg.NodeID || m.Leaving {
			continue
		}
		s, known := byID[m.ID]
		switch {
		case !known:
			// A replaced machine may come back under a new ID at an old
			// address: drop the stale entry first so one address has one ID.
			for _, old := range servers {
				if old.Address == m.Cluster && old.ID != m.ID {
					if _, up := alive[old.ID]; !up && n.safeToRemove(servers, alive, old) {
						n.log.Info("removing server replaced at the same address", "old", old.ID, "new", m.ID)
						_ = n.cons.RemoveServer(old.ID)
					}
				}
			}
			n.log.Info("adding new member as nonvoter", "member", m.ID, "addr", m.Cluster)
			if err := n.cons.AddNonvoter(m.ID, m.Cluster); err != nil {
				n.log.Warn("add nonvoter failed", "member", m.ID, "err", err)
			}
		case s.Address != m.Cluster:
			n.log.Info("member moved; updating its address", "member", m.ID, "from", s.Address, "to", m.Cluster)
			if err := n.cons.RemoveServer(m.ID); err == nil {
				_ = n.cons.AddNonvoter(m.ID, m.Cluster)
			}
		case !s.Voter:
			if n.caughtUp(ctx, m) {
				n.log.Info("promoting caught-up member to voter", "member", m.ID)
				if err := n.cons.AddVoter(m.ID, m.Cluster); err != nil {
					n.log.Warn("promote failed", "member", m.ID, "err", err)
				}
			}
		}
	}

	now := time.Now()
	for id := range failedSince {
		if _, ok := byID[id]; !ok {
			delete(failedSince, id)
		}
	}
	for _, s := range servers {
		if s.ID == n.cfg.NodeID {
			continue
		}
		if _, up := alive[s.ID]; up {
			delete(failedSince, s.ID)
			continue
		}
		since, seen := failedSince[s.ID]
		if !seen {
			failedSince[s.ID] = now
			continue
		}
		if now.Sub(since) < n.cfg.DeadServerTimeout {
			continue
		}
		if !n.safeToRemove(servers, alive, s) {
			continue
		}
		if n.reachable(ctx, s.Address) {
			// Gossip says dead but Raft's own port answers: the failure
			// detector is wrong (a gossip-only partition). Removing a
			// healthy voter on gossip's word could shrink the cluster
			// one false alarm at a time.
			failedSince[s.ID] = now
			continue
		}
		n.log.Warn("removing member gone longer than the dead-server timeout", "member", s.ID, "gone_for", now.Sub(since).Round(time.Second))
		if err := n.cons.RemoveServer(s.ID); err != nil {
			n.log.Warn("remove failed", "member", s.ID, "err", err)
		}
	}
}

// safeToRemove reports whether removing s still leaves a quorum of live
// voters in the new configuration.
func (n *Node) safeToRemove(servers []consensus.Server, alive map[string]member, s consensus.Server) bool {
	if !s.Voter {
		return true
	}
	remaining, live := 0, 0
	for _, v := range servers {
		if !v.Voter || v.ID == s.ID {
			continue
		}
		remaining++
		if _, up := alive[v.ID]; up {
			live++
		}
	}
	return remaining > 0 && live >= remaining/2+1
}

// reachable reports whether a server answers on the cluster port.
func (n *Node) reachable(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := n.cons.PeerStatus(ctx, addr)
	return err == nil
}

// caughtUp asks a nonvoter how far it has come.
func (n *Node) caughtUp(ctx context.Context, m member) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := n.cons.PeerStatus(ctx, m.Cluster)
	if err != nil {
		return false
	}
	return st.AppliedIndex+catchUpSlack >= n.cons.Status().CommitIndex
}

// rejoinLoop keeps gossip connected: memberlist stops talking to a peer it
// declared dead, so after a partition heals somebody has to knock again.
func (n *Node) rejoinLoop(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for {
		targets := n.rejoinTargets()
		if len(targets) > 0 {
			if joined, err := n.gossip.list.Join(targets); err != nil && joined == 0 {
				n.log.Debug("gossip join attempt failed", "targets", targets, "err", err)
			} else {
				backoff = n.cfg.Profile.Rejoin
			}
		} else {
			backoff = n.cfg.Profile.Rejoin
		}
		n.savePeers()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, n.cfg.Profile.Rejoin)
	}
}

// rejoinTargets are configured or previously seen peers that gossip does
// not currently count as alive.
func (n *Node) rejoinTargets() []string {
	aliveAddrs := make(map[string]bool)
	for _, m := range n.gossip.members() {
		aliveAddrs[m.GossipAddr] = true
	}
	n.peersMu.Lock()
	for _, m := range n.gossip.members() {
		if m.ID != n.cfg.NodeID {
			n.peers[m.ID] = m.GossipAddr
		}
	}
	candidates := slices.Clone(n.cfg.Join)
	for _, addr := range n.peers {
		candidates = append(candidates, addr)
	}
	n.peersMu.Unlock()
	self := n.gossip.advertiseAddr()
	var out []string
	for _, addr := range candidates {
		if addr != self && !aliveAddrs[addr] && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// peersFile remembers the gossip addresses of members seen, so a restarted
// node finds the cluster even without a join list.
func (n *Node) peersFile() string { return filepath.Join(n.cfg.DataDir, "peers.json") }

func (n *Node) loadPeers() {
	b, err := os.ReadFile(n.peersFile())
	if err != nil {
		return
	}
	peers := make(map[string]string)
	if json.Unmarshal(b, &peers) == nil {
		n.peersMu.Lock()
		for id, addr := range peers {
			if id != n.cfg.NodeID {
				n.peers[id] = addr
			}
		}
		n.peersMu.Unlock()
	}
}

func (n *Node) savePeers() {
	n.peersMu.Lock()
	b, err := json.Marshal(n.peers)
	n.peersMu.Unlock()
	if err != nil {
		return
	}
	if old, err := os.ReadFile(n.peersFile()); err == nil && string(old) == string(b) {
		return
	}
	tmp := n.peersFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		_ = os.Rename(tmp, n.peersFile())
	}
}

// Leave departs gracefully: hand leadership over, leave Raft, tell gossip,
// and then the node shuts down.
func (n *Node) Leave(ctx context.Context) error {
	servers, err := n.cons.Configuration()
	if err != nil {
		return err
	}
	alive := make(map[string]member)
	for _, m := range n.gossip.members() {
		alive[m.ID] = m
	}
	for _, s := range servers {
		if s.ID == n.cfg.NodeID && !n.safeToRemove(servers, alive, s) {
			return ErrUnsafeLeave
		}
	}
	// Say so in gossip first: between our removal from Raft and our
	// leaving gossip, the leader would otherwise see a live member missing
	// from the configuration and add it back (setRecord waits for the
	// broadcast to go out).
	if err := n.gossip.setRecord(func(r *Record) { r.Leaving = true }); err != nil {
		return fmt.Errorf("announcing the leave: %w", err)
	}
	if n.cons.IsLeader() {
		n.log.Info("leaving: transferring leadership")
		if err := n.cons.TransferLeadership(); err != nil {
			n.log.Warn("leadership transfer failed; removing ourselves as leader", "err", err)
		}
	}
	if err := n.cons.RequestRemove(ctx, n.cfg.NodeID); err != nil {
		return err
	}
	n.log.Info("left the Raft configuration; leaving gossip")
	if err := n.gossip.list.Leave(5 * time.Second); err != nil {
		n.log.Warn("gossip leave", "err", err)
	}
	n.left.Store(true)
	go n.Shutdown(context.Background())
	return nil
}

// kickRepair starts a blob repair pass once this node has applied
// everything committed so far (a read barrier): right after a partition
// heals, the local state may not yet name the bodies accepted meanwhile,
// and a pass over it would find nothing to fetch. One kick waits at a time.
func (n *Node) kickRepair(ctx context.Context) {
	if !n.repairKick.CompareAndSwap(false, true) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.repairKick.Store(false)
		bctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := n.cons.ReadBarrier(bctx); err != nil {
			return // still cut off: the next regained contact kicks again
		}
		n.bodies.Kick()
	}()
}

// repairWatch notices when this node may have missed bodies: the leader
// changed (someone died or was cut off), or this node is back in contact
// with the leader after a gap (it was the one cut off or frozen). Gossip
// may not mark a short absence at all.
type repairWatch struct {
	leader    string
	inContact bool
}

func (w *repairWatch) changed(st consensus.Status, heartbeat time.Duration) bool {
	inContact := st.LeaderID != "" && (st.LeaderID == st.ID || time.Since(st.LastContact) < 2*heartbeat)
	kick := (st.LeaderID != "" && st.LeaderID != w.leader) || (inContact && !w.inContact)
	if st.LeaderID != "" {
		w.leader = st.LeaderID
	}
	w.inContact = inContact
	return kick
}
