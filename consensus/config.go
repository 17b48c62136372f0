package consensus

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// Link is one authenticated node-to-node channel: incoming connections and a
// dialer for outgoing ones. The node layer provides it (mutual TLS).
type Link interface {
	Accept() (net.Conn, error)
	Close() error
	Addr() net.Addr
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// Timing holds the Raft timers. They trade failover speed against false
// elections on a slow network; see LANTiming and WANTiming.
type Timing struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// LANTiming suits nodes in one data centre (round trips well under 10 ms):
// a dead leader is replaced in about a second.
func LANTiming() Timing {
	return Timing{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	}
}

// WANTiming suits nodes spread over sites (round trips up to a few hundred
// ms): slower failover, no elections caused by a jittery link.
func WANTiming() Timing {
	return Timing{
		HeartbeatTimeout:   2 * time.Second,
		ElectionTimeout:    2 * time.Second,
		LeaderLeaseTimeout: 1500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
	}
}

// Config configures one consensus node.
type Config struct {
	NodeID    string
	Advertise string // the cluster address other nodes dial to reach this one
	Dir       string // raft.db (log and stable store) and snapshots/

	RaftLink Link // carries Raft's own RPCs
	RPCLink  Link // carries forwarded proposals, read index and status

	StateMachine StateMachine

	Timing
	// ProposeTimeout bounds how long Propose and ReadBarrier keep trying to
	// reach a quorum before they give up with ErrNoQuorum.
	ProposeTimeout time.Duration
	// ApplyWaitTimeout bounds how long a committed write, or a read barrier
	// whose index the leader gave, waits for this node to apply it. A node
	// back from a partition may trail for a while (raft's replication
	// backoff reaches 10 s); the write is committed regardless.
	ApplyWaitTimeout time.Duration

	SnapshotThreshold uint64        // log entries between snapshots
	SnapshotInterval  time.Duration // how often to check the threshold
	TrailingLogs      uint64        // entries kept after a snapshot, so slow followers catch up from the log
	MaxAppendEntries  int           // entries per AppendEntries RPC and per state machine batch

	Logger *slog.Logger
	// OnFatal is called once if the state machine fails and this node must
	// stop following the log. May be nil.
	OnFatal func(error)
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.NodeID == "" || out.Advertise == "" || out.Dir == "" {
		return out, errors.New("consensus: NodeID, Advertise and Dir are required")
	}
	if out.RaftLink == nil || out.RPCLink == nil || out.StateMachine == nil {
		return out, errors.New("consensus: RaftLink, RPCLink and StateMachine are required")
	}
	if out.HeartbeatTimeout == 0 {
		out.Timing = LANTiming()
	}
	if out.ProposeTimeout == 0 {
		out.ProposeTimeout = 4*out.ElectionTimeout + 2*time.Second
	}
	if out.ApplyWaitTimeout == 0 {
		out.ApplyWaitTimeout = 30 * time.Second
	}
	if out.SnapshotThreshold == 0 {
		out.SnapshotThreshold = 16384
	}
	if out.SnapshotInterval == 0 {
		out.SnapshotInterval = 30 * time.Second
	}
	if out.TrailingLogs == 0 {
		out.TrailingLogs = 10240
	}
	if out.MaxAppendEntries == 0 {
		out.MaxAppendEntries = 256
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}
