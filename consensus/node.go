package consensus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/rpc"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Errors callers act on.
var (
	// ErrNoQuorum means the cluster could not commit (or confirm) within the
	// propose timeout: this node cannot reach a majority. It never counts as
	// acknowledged; the proposal did not commit, unless the error also
	// matches ErrOutcomeUnknown.
	ErrNoQuorum = errors.New("no quorum: this node cannot reach a majority of the cluster")
	// ErrOutcomeUnknown comes wrapped together with ErrNoQuorum (or the
	// caller's context error) when the proposal reached a leader that lost
	// its majority, its link to this node or the caller's patience before
	// answering: the entry may still commit. Only a later read tells.
	ErrOutcomeUnknown = errors.New("the outcome is unknown: the proposal reached a leader that lost its majority before answering")
	// ErrCatchingUp comes wrapped together with ErrNoQuorum from a read
	// barrier whose leader answered but that ended before this node had
	// applied what the leader reported: the node is connected and behind.
	ErrCatchingUp = errors.New("this node is still catching up with the leader")
	// ErrNotLeader is returned by membership operations on a follower.
	ErrNotLeader = errors.New("not the Raft leader")
	// ErrShutdown is returned after Shutdown.
	ErrShutdown = errors.New("consensus node is shut down")
)

// Server is one member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Result is what a committed proposal produced.
type Result struct {
	Index uint64 // the log index the proposal was committed at
	Data  []byte // the state machine's result for it
}

// Status is one node's view of Raft, for status pages and metrics.
type Status struct {
	ID            string
	Address       string
	State         string // Leader, Follower, Candidate or Shutdown
	Term          uint64
	LastIndex     uint64
	CommitIndex   uint64
	AppliedIndex  uint64
	LastContact   time.Time // last contact with the leader; zero on the leader
	LeaderID      string
	LeaderAddress string
}

// Node is this process's Raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *fsmAdapter
	logStore  *raftboltdb.BoltStore
	transport *guardedTransport
	rpcServer *rpc.Server
	clients   *rpcClients
	notifyCh  chan bool

	readyMu      sync.Mutex
	readyTerm    uint64        // term whose leader marker is applied here
	readyChanged chan struct{} // closed and replaced when readyTerm moves

	leadingMu      sync.Mutex
	leadingChanged chan struct{} // closed and replaced when this node gains or loses leadership

	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// Open starts Raft on the given links with the state found in cfg.Dir. A
// node with no state waits until Bootstrap is called or a leader adds it.
func Open(c Config) (*Node, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	hlog := newHclog(cfg.Logger, "raft")

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	transport := &guardedTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{link: cfg.RaftLink, advertise: advertiseAddr(cfg.Advertise)},
		MaxPool: 4,
		Timeout: 10 * time.Second,
		// Pipelined replication in raft v1.8.0 can deadlock when a follower
		// answers Success=false or a higher term (as after a leadership
		// transfer): the follower then never receives another entry and the
		// leader cannot shut down. Its own docs say it barely helps with
		// batching on; 1 turns it off.
		MaxRPCsInFlight: 1,
		Logger:          hlog,
	})}

	n := &Node{
		cfg:          cfg,
		logStore:     store,
		transport:    transport,
		clients:      &rpcClients{link: cfg.RPCLink, byAddr: make(map[string]*rpc.Client)},
		notifyCh:     make(chan bool, 16),
		readyChanged: make(chan struct{}),
		stop:         make(chan struct{}),

		leadingChanged: make(chan struct{}),
	}
	n.fsm = newFSMAdapter(cfg.StateMachine, cfg.Logger, cfg.OnFatal)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = true
	rc.NotifyCh = n.notifyCh
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		_ = transport.Close()
		_ = store.Close()
		return nil, fmt.Errorf("raft timings: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, store, snaps, transport)
	if err != nil {
		_ = transport.Close()
		_ = store.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r

	n.rpcServer = rpc.NewServer()
	if err := n.rpcServer.Register(&RaftRPC{n: n}); err != nil {
		_ = n.Shutdown()
		return nil, err
	}
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.serveRPC() }()
	go func() { defer n.wg.Done(); n.watchLeadership() }()
	return n, nil
}

// Bootstrap starts a new cluster with the given voters. Every node of a
// bootstrap-expect group calls it with the same list; raft accepts the
// identical configuration on each. It is a no-op on a node with state.
func (n *Node) Bootstrap(servers []Server) error {
	var cfg raft.Configuration
	for _, s := range servers {
		suffrage := raft.Voter
		if !s.Voter {
			suffrage = raft.Nonvoter
		}
		cfg.Servers = append(cfg.Servers, raft.Server{
			ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address), Suffrage: suffrage,
		})
	}
	err := n.raft.BootstrapCluster(cfg).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// HasState reports whether this node has ever been part of a cluster (it
// holds a log entry or a snapshot).
func (n *Node) HasState() bool { return n.raft.LastIndex() > 0 }

// IsLeader reports whether this node is the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeadershipChanged returns a channel that is closed the next time this
// node becomes the leader or stops being it. Take the channel, then read
// IsLeader: a change after that read closes the channel, so none is missed.
func (n *Node) LeadershipChanged() <-chan struct{} {
	n.leadingMu.Lock()
	defer n.leadingMu.Unlock()
	return n.leadingChanged
}

// Leader returns the current leader's ID and address, empty if unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// AppliedIndex is the last log index applied on this node.
func (n *Node) AppliedIndex() uint64 { return n.fsm.appliedIndex() }

// WaitApplied blocks until index idx is applied on this node.
func (n *Node) WaitApplied(ctx context.Context, idx uint64) error {
	return n.fsm.waitApplied(ctx, idx)
}

// Status reports this node's Raft view.
func (n *Node) Status() Status {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	st := Status{
		ID:            n.cfg.NodeID,
		Address:       n.cfg.Advertise,
		State:         n.raft.State().String(),
		Term:          n.raft.CurrentTerm(),
		LastIndex:     n.raft.LastIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		AppliedIndex:  n.fsm.appliedIndex(),
		LeaderID:      string(leaderID),
		LeaderAddress: string(leaderAddr),
	}
	if st.State != raft.Leader.String() {
		st.LastContact = n.raft.LastContact()
	}
	return st
}

// PeerStatus asks the node at addr (its cluster address) for its Status.
func (n *Node) PeerStatus(ctx context.Context, addr string) (Status, error) {
	if addr == n.cfg.Advertise {
		return n.Status(), nil
	}
	var st Status
	err := n.clients.call(ctx, addr, "Status", Empty{}, &st)
	return st, err
}

// Propose commits data through Raft from any node and returns once it is
// applied on this node. Retries after a leader change reuse the proposal ID.
func (n *Node) Propose(ctx context.Context, data []byte) (Result, error) {
	var id ProposalID
	if _, err := rand.Read(id[:]); err != nil {
		return Result{}, err
	}
	return n.ProposeWithID(ctx, id, data)
}

// ProposeWithID is Propose with a caller-chosen proposal ID, for callers
// that retry on their own after an error whose outcome is unknown: a
// state machine that remembers IDs applies the proposal once.
func (n *Node) ProposeWithID(ctx context.Context, id ProposalID, data []byte) (Result, error) {
	res, err := n.commit(ctx, id, data)
	if err != nil {
		return res, err
	}
	// The entry is committed: the outcome is decided and must be reported
	// as success. What is left is read-your-writes on this node, which may
	// trail the leader (a node just back from a partition waits out raft's
	// replication backoff), so wait for it apart from the propose timeout.
	n.awaitApplied(ctx, res.Index)
	return res, nil
}

// ProposeCommitted is Propose for writes the caller will not read back on
// this node (an SMTP delivery): it returns as soon as the leader has
// committed and applied the entry, without waiting for this node to apply
// it. Durability is the same; only read-your-writes here is given up.
func (n *Node) ProposeCommitted(ctx context.Context, data []byte) (Result, error) {
	var id ProposalID
	if _, err := rand.Read(id[:]); err != nil {
		return Result{}, err
	}
	return n.commit(ctx, id, data)
}

// commit gets the entry committed through whichever node leads. When it
// gives up after an attempt that may have put the entry in a leader's log,
// the error matches ErrOutcomeUnknown as well (besides ErrNoQuorum, or the
// context's error when the caller gave up first).
func (n *Node) commit(ctx context.Context, id ProposalID, data []byte) (Result, error) {
	var res Result
	uncertain := false
	err := n.retry(ctx, func(ctx context.Context, leaderAddr string) (err error) {
		defer func() {
			if err != nil && maybeApplied(err) {
				uncertain = true
			}
		}()
		if leaderAddr == "" {
			idx, data, err := n.applyLocal(id, data)
			if err != nil {
				return err
			}
			res = Result{Index: idx, Data: data}
			return nil
		}
		var reply ApplyReply
		if err := n.clients.call(ctx, leaderAddr, "Apply", ApplyArgs{ID: id, Data: data}, &reply); err != nil {
			return err
		}
		res = Result{Index: reply.Index, Data: reply.Result}
		return nil
	})
	if err != nil && uncertain && gaveUp(err) {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return res, err
}

// awaitApplied waits, for at most ApplyWaitTimeout, until a committed
// index is applied here. It never fails: the caller's write is committed
// either way; if this node lags that long, its later reads will show the
// write once it catches up.
func (n *Node) awaitApplied(ctx context.Context, idx uint64) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ApplyWaitTimeout)
	defer cancel()
	if err := n.fsm.waitApplied(wctx, idx); err != nil {
		n.cfg.Logger.Warn("write committed but not yet applied on this node", "index", idx, "applied", n.fsm.appliedIndex(), "err", err)
	}
}

// ReadBarrier returns once this node has applied every entry committed
// before the call began, so a following local read is linearizable.
func (n *Node) ReadBarrier(ctx context.Context) error { return n.readBarrier(ctx, "") }

// ScopedReadBarrier is ReadBarrier for reads of one scope of a Scoped state
// machine: it returns once this node has applied every entry of that scope
// committed before the call. (A state machine that is not Scoped gets a
// full ReadBarrier.)
func (n *Node) ScopedReadBarrier(ctx context.Context, scope string) error {
	if _, ok := n.fsm.sm.(Scoped); !ok {
		scope = ""
	}
	return n.readBarrier(ctx, scope)
}

// readBarrier is ReadBarrier ("" scope) or ScopedReadBarrier.
func (n *Node) readBarrier(ctx context.Context, scope string) error {
	var idx uint64
	err := n.retry(ctx, func(ctx context.Context, leaderAddr string) error {
		if leaderAddr == "" {
			var err error
			if scope == "" {
				idx, err = n.leaderReadIndex(ctx)
			} else {
				idx, err = n.leaderScopeIndex(ctx, scope)
			}
			return err
		}
		var reply ReadIndexReply
		var err error
		if scope != "" {
			err = n.clients.call(ctx, leaderAddr, "ScopeIndex", ScopeArgs{Scope: scope}, &reply)
		}
		if scope == "" || unknownMethod(err) {
			// A leader of an older version (during a rolling upgrade)
			// knows no scopes: a full barrier is never wrong.
			err = n.clients.call(ctx, leaderAddr, "ReadIndex", Empty{}, &reply)
		}
		if err != nil {
			return err
		}
		idx = reply.Index
		return nil
	})
	if err != nil {
		return err
	}
	// The leader answered: this node is connected and only has to catch up,
	// which after a healed partition can take raft's replication backoff.
	wctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyWaitTimeout)
	defer cancel()
	if err := n.fsm.waitApplied(wctx, idx); err != nil {
		if errors.Is(err, errStopped) || errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: %w: applied %d of %d", ErrNoQuorum, ErrCatchingUp, n.fsm.appliedIndex(), idx)
	}
	return nil
}

// gaveUp reports whether commit stopped without an answer from the state
// machine: no quorum in time, the caller's context ended, or shutdown.
func gaveUp(err error) bool {
	return errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrShutdown) || errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// AwaitLeader returns once this node leads or follows a known leader, or
// ErrNoQuorum after the propose timeout. A node cut off from the majority
// loses its leader within an election timeout, so a write can fail fast,
// before any work, instead of waiting on peers it cannot reach.
func (n *Node) AwaitLeader(ctx context.Context) error {
	return n.retry(ctx, func(context.Context, string) error { return nil })
}

// errRetry marks an attempt that may succeed against another leader.
var errRetry = errors.New("retry")

// retry runs attempt against the current leader (leaderAddr "" means this
// node is the leader) until it succeeds, fails for good, or the propose
// timeout passes, which yields ErrNoQuorum.
func (n *Node) retry(ctx context.Context, attempt func(ctx context.Context, leaderAddr string) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ProposeTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	var last error
	for {
		select {
		case <-n.stop:
			return ErrShutdown
		default:
		}
		if err := n.fsm.failure(); err != nil {
			return err
		}
		var err error
		leaderAddr, leaderID := n.raft.LeaderWithID()
		switch {
		case n.IsLeader():
			err = attempt(ctx, "")
		case leaderAddr != "" && string(leaderID) != n.cfg.NodeID:
			err = n.forward(ctx, string(leaderAddr), attempt)
		default:
			err = fmt.Errorf("%w: no leader known", errRetry)
		}
		if err == nil {
			return nil
		}
		if !n.retryable(err) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %v)", ErrNoQuorum, last)
		case <-n.stop:
			return ErrShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// errLeaderChanged ends a forwarded attempt when another leader appears.
var errLeaderChanged = errors.New("leader changed")

// forward runs attempt against the leader at leaderAddr, and abandons it as
// soon as this node learns of a different leader: a leader that froze or
// died mid-call would otherwise hold the caller until the propose timeout
// although its successor could answer at once. The retry carries the same
// proposal ID, so an entry the old leader did get in applies only once.
func (n *Node) forward(ctx context.Context, leaderAddr string, attempt func(context.Context, string) error) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(n.cfg.HeartbeatTimeout / 10)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if addr, _ := n.raft.LeaderWithID(); addr != "" && string(addr) != leaderAddr {
					cancel(errLeaderChanged)
					return
				}
			}
		}
	}()
	err := attempt(actx, leaderAddr)
	if err != nil && errors.Is(context.Cause(actx), errLeaderChanged) {
		return fmt.Errorf("%w: %w while waiting for %s", errRetry, errLeaderChanged, leaderAddr)
	}
	return err
}

func (n *Node) retryable(err error) bool {
	if errors.Is(err, errRetry) || isLeadershipErr(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if errors.Is(err, errStopped) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, context.Canceled) {
		return false
	}
	notLeader, noQuorum := remoteErr(err)
	if notLeader || noQuorum {
		return true
	}
	var serverErr rpc.ServerError
	// Anything that is not an answer from the leader's service is a
	// transport failure: the leader may be gone, try again.
	return !errors.As(err, &serverErr)
}

// unknownMethod reports whether a peer's RPC service lacks the method
// called (it runs an older version).
func unknownMethod(err error) bool {
	var serverErr rpc.ServerError
	return errors.As(err, &serverErr) && strings.Contains(string(serverErr), "can't find method")
}

func isLeadershipErr(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrAbortedByRestore) ||
		errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, ErrNotLeader)
}

// applyLocal appends on this node, which must be the leader, and waits for
// the entry to be applied here.
func (n *Node) applyLocal(id ProposalID, data []byte) (uint64, []byte, error) {
	f := n.raft.Apply(encodeCommand(id, data), n.cfg.ProposeTimeout)
	if err := f.Error(); err != nil {
		return 0, nil, err
	}
	res, _ := f.Response().(applyResult)
	if res.err != nil {
		return 0, nil, res.err
	}
	return f.Index(), res.data, nil
}

// watchLeadership drains raft's NotifyCh (an undrained one blocks raft) and
// writes a marker entry at the start of each term this node leads.
func (n *Node) watchLeadership() {
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.notifyCh:
			if isLeader {
				go n.markLeaderReady(n.raft.CurrentTerm())
			}
			n.leadingMu.Lock()
			close(n.leadingChanged)
			n.leadingChanged = make(chan struct{})
			n.leadingMu.Unlock()
		}
	}
}

// markLeaderReady commits a marker entry in the new term. Once it is applied
// here, every entry of earlier terms is applied too, so the commit index is
// a safe read index (Raft §6.4).
func (n *Node) markLeaderReady(term uint64) {
	if err := n.raft.Apply([]byte{kindMarker}, n.cfg.ProposeTimeout).Error(); err != nil {
		return
	}
	if n.raft.CurrentTerm() != term {
		return
	}
	n.readyMu.Lock()
	if term > n.readyTerm {
		n.readyTerm = term
		close(n.readyChanged)
		n.readyChanged = make(chan struct{})
	}
	n.readyMu.Unlock()
}

// leaderScopeIndex is the leader side of a scoped read barrier: once the
// leader has applied its read index, its state machine knows the last
// entry of the scope among everything committed before the call.
func (n *Node) leaderScopeIndex(ctx context.Context, scope string) (uint64, error) {
	idx, err := n.leaderReadIndex(ctx)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyWaitTimeout)
	defer cancel()
	if err := n.fsm.waitApplied(wctx, idx); err != nil {
		return 0, err
	}
	if sm, ok := n.fsm.sm.(Scoped); ok {
		return sm.ScopeIndex(scope), nil
	}
	return idx, nil
}

// leaderReadIndex is the leader side of a read barrier.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	tick := time.NewTicker(n.cfg.HeartbeatTimeout / 4)
	defer tick.Stop()
	for {
		if !n.IsLeader() {
			return 0, ErrNotLeader
		}
		n.readyMu.Lock()
		ready, changed := n.readyTerm == n.raft.CurrentTerm(), n.readyChanged
		n.readyMu.Unlock()
		if ready {
			break
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	return n.raft.CommitIndex(), nil
}

// Configuration returns the current Raft configuration.
func (n *Node) Configuration() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

func (n *Node) membershipTimeout() time.Duration { return n.cfg.ProposeTimeout }

// AddVoter adds a voter or promotes a nonvoter. Leader only.
func (n *Node) AddVoter(id, addr string) error {
	return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.membershipTimeout()).Error()
}

// AddNonvoter adds a server that receives the log but does not vote. Leader only.
func (n *Node) AddNonvoter(id, addr string) error {
	return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.membershipTimeout()).Error()
}

// RemoveServer removes a server from the configuration. Leader only.
func (n *Node) RemoveServer(id string) error {
	return n.raft.RemoveServer(raft.ServerID(id), 0, n.membershipTimeout()).Error()
}

// TransferLeadership hands leadership to another voter. Leader only.
func (n *Node) TransferLeadership() error {
	return n.raft.LeadershipTransfer().Error()
}

// RequestRemove removes server id through whichever node leads, for a
// graceful leave started on any node.
func (n *Node) RequestRemove(ctx context.Context, id string) error {
	err := n.retry(ctx, func(ctx context.Context, leaderAddr string) error {
		if leaderAddr == "" {
			return n.RemoveServer(id)
		}
		return n.clients.call(ctx, leaderAddr, "RemoveServer", RemoveArgs{ID: id}, &Empty{})
	})
	if !errors.Is(err, ErrNoQuorum) {
		return err
	}
	// This node may already be out of the configuration (an earlier
	// removal committed but its answer was lost): then no leader talks to
	// it any more and it never learns one. Ask the other servers who
	// leads, and remove through that leader (removing a removed server
	// changes nothing).
	if perr := n.removeThroughPeers(ctx, id); perr == nil {
		return nil
	}
	return err
}

// removeThroughPeers asks each other server of this node's configuration
// for its leader and sends the removal there.
func (n *Node) removeThroughPeers(ctx context.Context, id string) error {
	servers, err := n.Configuration()
	if err != nil {
		return err
	}
	last := errors.New("no server knows a leader")
	for _, s := range servers {
		if s.ID == n.cfg.NodeID {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := n.PeerStatus(sctx, s.Address)
		if err == nil && st.LeaderAddress != "" {
			err = n.clients.call(sctx, st.LeaderAddress, "RemoveServer", RemoveArgs{ID: id}, &Empty{})
			if err == nil {
				cancel()
				return nil
			}
		}
		cancel()
		if err != nil {
			last = err
		}
	}
	return last
}

// Snapshot takes a snapshot now and compacts the log.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops Raft and closes the log. The state machine is the caller's
// to close afterwards.
func (n *Node) Shutdown() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.stop)
		if n.raft != nil {
			err = n.raft.Shutdown().Error()
		}
		_ = n.cfg.RPCLink.Close()
		_ = n.transport.Close()
		n.transport.stopHeartbeats()
		n.clients.closeAll()
		n.wg.Wait()
		if cerr := n.logStore.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
