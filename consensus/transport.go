package consensus

import (
	"context"
	"net"
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
