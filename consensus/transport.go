package consensus

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer adapts a Link to raft's StreamLayer. Addr reports the
// advertised address, which is what raft writes into its configuration.
type streamLayer struct {
	link      Link
	advertise net.Addr
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) { return s.link.Accept() }
func (s *streamLayer) Close() error              { return s.link.Close() }
func (s *streamLayer) Addr() net.Addr            { return s.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.link.Dial(ctx, string(address))
}

// advertiseAddr is a net.Addr for a host:port string.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// guardedTransport is raft's network transport with its heartbeat fast
// path fenced off at shutdown. Raft runs heartbeats on the transport's
// connection goroutines, not its own loop, and neither raft.Shutdown nor
// the transport's Close waits for one already past raft's shutdown check:
// it then writes the term to a log store that Shutdown has closed, and
// raft panics ("failed to save current term: database not open"). Close
// of the log store waits for stopHeartbeats, which waits for the
// heartbeats in progress and refuses later ones.
type guardedTransport struct {
	*raft.NetworkTransport

	mu      sync.RWMutex
	stopped bool
}

// SetHeartbeatHandler wraps raft's handler so stopHeartbeats can fence it.
func (t *guardedTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		if t.stopped {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		cb(rpc)
	})
}

// stopHeartbeats returns once no heartbeat is being handled, and makes
// every later one fail without touching raft.
func (t *guardedTransport) stopHeartbeats() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
}
