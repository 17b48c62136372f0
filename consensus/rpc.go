package consensus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The forwarding RPC is Go's net/rpc (gob over one multiplexed connection per
// peer) on the authenticated RPC link. Errors cross the wire as strings, so
// the few that callers act on have fixed texts.
const (
	rpcNotLeader      = "consensus: not the leader"
	rpcNoQuorum       = "consensus: no quorum"
	rpcLeadershipLost = "consensus: leadership lost before the entry committed"
)

// ApplyArgs carries a forwarded proposal.
type ApplyArgs struct {
	ID   ProposalID
	Data []byte
}

// ApplyReply tells the follower where its proposal landed.
type ApplyReply struct {
	Index  uint64
	Result []byte
}

// ReadIndexReply carries the leader's commit index for a read barrier.
type ReadIndexReply struct{ Index uint64 }

// ScopeArgs names the scope of a scoped read barrier.
type ScopeArgs struct{ Scope string }

// RemoveArgs asks the leader to remove a server from the configuration.
type RemoveArgs struct{ ID string }

// Empty is the argument or reply of calls that carry nothing.
type Empty struct{}

// RaftRPC is the service other nodes call on this one. Its exported methods
// are exactly the RPC methods (net/rpc requires that shape).
type RaftRPC struct{ n *Node }

// Apply commits a proposal; only the leader accepts it.
func (s *RaftRPC) Apply(args ApplyArgs, reply *ApplyReply) error {
	if !s.n.IsLeader() {
		return errors.New(rpcNotLeader)
	}
	idx, res, err := s.n.applyLocal(args.ID, args.Data)
	if err != nil {
		return applyErrorReply(err)
	}
	reply.Index, reply.Result = idx, res
	return nil
}

// applyErrorReply is what a forwarded Apply that failed on the leader
// tells the follower. Losing leadership, or shutting down (a stopping or
// killed leader), after the entry may have entered the log is an unknown
// outcome: the entry can still commit under the next leader, so the
// follower must not report "not applied". (Seen in the chaos suite: an
// IMAP STORE answered NO [UNAVAILABLE] while the leader was being killed,
// yet applied.)
func applyErrorReply(err error) error {
	switch {
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		return errors.New(rpcLeadershipLost)
	case isLeadershipErr(err):
		return errors.New(rpcNotLeader)
	}
	return err
}

// ReadIndex returns a commit index that covers every write acknowledged
// before the call; only the leader answers.
func (s *RaftRPC) ReadIndex(_ Empty, reply *ReadIndexReply) error {
	return s.leaderIndex(s.n.leaderReadIndex, reply)
}

// ScopeIndex returns the index a scoped read barrier must wait for (see
// Scoped); only the leader answers.
func (s *RaftRPC) ScopeIndex(args ScopeArgs, reply *ReadIndexReply) error {
	return s.leaderIndex(func(ctx context.Context) (uint64, error) { return s.n.leaderScopeIndex(ctx, args.Scope) }, reply)
}

// leaderIndex answers a barrier's question on the leader, within the
// propose timeout, with the errors followers recognise.
func (s *RaftRPC) leaderIndex(get func(context.Context) (uint64, error), reply *ReadIndexReply) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.n.cfg.ProposeTimeout)
	defer cancel()
	idx, err := get(ctx)
	if err != nil {
		if isLeadershipErr(err) {
			return errors.New(rpcNotLeader)
		}
		return errors.New(rpcNoQuorum)
	}
	reply.Index = idx
	return nil
}

// Status reports this node's Raft view.
func (s *RaftRPC) Status(_ Empty, reply *Status) error {
	*reply = s.n.Status()
	return nil
}

// RemoveServer removes a server; only the leader accepts it.
func (s *RaftRPC) RemoveServer(args RemoveArgs, _ *Empty) error {
	if !s.n.IsLeader() {
		return errors.New(rpcNotLeader)
	}
	if err := s.n.RemoveServer(args.ID); err != nil {
		if isLeadershipErr(err) {
			return errors.New(rpcNotLeader)
		}
		return err
	}
	return nil
}

func (n *Node) serveRPC() {
	for {
		conn, err := n.cfg.RPCLink.Accept()
		if err != nil {
			return
		}
		go n.rpcServer.ServeConn(conn)
	}
}

// rpcClients keeps one multiplexed client per peer address.
type rpcClients struct {
	link   Link
	mu     sync.Mutex
	byAddr map[string]*rpc.Client
}

func (c *rpcClients) get(ctx context.Context, addr string) (*rpc.Client, error) {
	c.mu.Lock()
	cl, ok := c.byAddr[addr]
	c.mu.Unlock()
	if ok {
		return cl, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := c.link.Dial(dctx, addr)
	if err != nil {
		return nil, err
	}
	cl = rpc.NewClient(conn)
	c.mu.Lock()
	if existing, ok := c.byAddr[addr]; ok {
		c.mu.Unlock()
		_ = cl.Close()
		return existing, nil
	}
	c.byAddr[addr] = cl
	c.mu.Unlock()
	return cl, nil
}

func (c *rpcClients) drop(addr string, cl *rpc.Client) {
	c.mu.Lock()
	if c.byAddr[addr] == cl {
		delete(c.byAddr, addr)
	}
	c.mu.Unlock()
	_ = cl.Close()
}

func (c *rpcClients) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, cl := range c.byAddr {
		_ = cl.Close()
		delete(c.byAddr, addr)
	}
}

// call invokes method on the node at addr, honouring ctx. A transport
// failure drops the cached connection so the next call redials.
func (c *rpcClients) call(ctx context.Context, addr, method string, args, reply any) error {
	cl, err := c.get(ctx, addr)
	if err != nil {
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	call := cl.Go("RaftRPC."+method, args, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		err = call.Error
	case <-ctx.Done():
		// The connection may now carry a late reply nobody reads; replace it.
		c.drop(addr, cl)
		return ctx.Err()
	}
	var serverErr rpc.ServerError
	if err != nil && !errors.As(err, &serverErr) {
		c.drop(addr, cl)
		var netErr net.Error
		if errors.Is(err, rpc.ErrShutdown) || errors.As(err, &netErr) {
			return fmt.Errorf("rpc to %s: %w", addr, err)
		}
	}
	return err
}

// remoteErr classifies an error returned by a peer's RPC service.
func remoteErr(err error) (notLeader, noQuorum bool) {
	var serverErr rpc.ServerError
	if !errors.As(err, &serverErr) {
		return false, false
	}
	msg := string(serverErr)
	return strings.Contains(msg, rpcNotLeader) || strings.Contains(msg, rpcLeadershipLost), strings.Contains(msg, rpcNoQuorum)
}

// errNotSent marks a forwarded call that failed before its request could
// reach the peer (the dial failed).
var errNotSent = errors.New("request not sent")

// maybeApplied reports whether a failed commit attempt may still have put
// the entry in a leader's log: the leader lost its leadership after taking
// it, or the forwarded request went out and no answer came back.
func maybeApplied(err error) bool {
	if errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, errLeaderChanged) {
		return true
	}
	var serverErr rpc.ServerError
	if errors.As(err, &serverErr) {
		return strings.Contains(string(serverErr), rpcLeadershipLost)
	}
	if errors.Is(err, errNotSent) || errors.Is(err, errRetry) || isLeadershipErr(err) {
		return false
	}
	// A transport failure or a timeout after the request was written.
	return true
}
