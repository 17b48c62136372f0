package clusternet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Channels multiplexed on the cluster port. The byte is sent by the dialer
// right after the TLS handshake.
const (
	ChannelRaft byte = 'R' // Raft RPCs (hashicorp/raft NetworkTransport)
	ChannelRPC  byte = 'F' // proposal forwarding, read index, status
	ChannelBlob byte = 'B' // message body copies between replicas
)

// handshakeTimeout bounds how long a connecting peer may take to finish TLS
// and name its channel, so a slow or hostile client cannot pin resources.
const handshakeTimeout = 10 * time.Second

// dialTimeout bounds a TCP connect to a peer: one that is cut off drops
// SYNs, and the kernel alone would keep retrying for about two minutes.
const dialTimeout = 5 * time.Second

// ErrLinkCut is returned when a Policy forbids talking to a peer.
var ErrLinkCut = errors.New("link to peer is cut")

// Policy decides whether this node may talk to a peer, named by node ID.
// Production nodes have none; the test harness uses it to cut links
// (partitions) between real nodes without touching the kernel.
type Policy interface {
	Allowed(peerID string) bool
}

// Mux owns the cluster port: it accepts connections, authenticates them and
// hands each to the Link of the channel it asks for.
type Mux struct {
	ln       net.Listener
	identity *Identity
	policy   Policy
	logger   *slog.Logger

	mu       sync.Mutex
	channels map[byte]*Link
	open     map[*PeerConn]struct{} // every connection accepted or dialed, until closed
	closed   bool
	done     chan struct{}
}

// Listen opens the cluster port on addr. Call Channel for every channel the
// node serves, then Serve.
func Listen(addr string, identity *Identity, policy Policy, logger *slog.Logger) (*Mux, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Mux{
		ln:       ln,
		identity: identity,
		policy:   policy,
		logger:   logger,
		channels: make(map[byte]*Link),
		open:     make(map[*PeerConn]struct{}),
		done:     make(chan struct{}),
	}, nil
}

// Addr is the address the cluster port listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Channel returns the Link for one channel, creating it on first use.
func (m *Mux) Channel(ch byte) *Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.channels[ch]; ok {
		return l
	}
	l := &Link{
		mux:     m,
		channel: ch,
		conns:   make(chan net.Conn, 64),
		closed:  make(chan struct{}),
	}
	m.channels[ch] = l
	return l
}

// Serve accepts connections until Close. It returns nil after Close.
func (m *Mux) Serve() error {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go m.handshake(conn)
	}
}

func (m *Mux) handshake(raw net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	conn := tls.Server(raw, m.identity.server)
	if err := conn.Handshake(); err != nil {
		m.logger.Debug("cluster handshake refused", "remote", raw.RemoteAddr().String(), "err", err)
		_ = raw.Close()
		return
	}
	peer := peerID(conn.ConnectionState())
	if m.policy != nil && !m.policy.Allowed(peer) {
		_ = conn.Close()
		return
	}
	var ch [1]byte
	if _, err := conn.Read(ch[:]); err != nil {
		_ = conn.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})

	m.mu.Lock()
	link := m.channels[ch[0]]
	m.mu.Unlock()
	if link == nil {
		m.logger.Warn("cluster connection for unknown channel", "peer", peer, "channel", ch[0])
		_ = conn.Close()
		return
	}
	wrapped, err := m.wrap(conn, peer)
	if err != nil {
		return
	}
	link.deliver(wrapped)
}

// Close stops accepting, closes every channel listener and every cluster
// connection still open in either direction, as a process that exits
// would: a stopped node must not keep answering on old connections (peers
// would take its stale answers for the node that replaces it on the same
// address).
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	links := make([]*Link, 0, len(m.channels))
	for _, l := range m.channels {
		links = append(links, l)
	}
	open := m.open
	m.open = nil
	m.mu.Unlock()
	for _, l := range links {
		_ = l.Close()
	}
	err := m.ln.Close()
	for c := range open {
		_ = c.Conn.Close()
	}
	return err
}

// wrap makes conn a PeerConn the Mux closes when it closes; after Close it
// closes conn at once.
func (m *Mux) wrap(conn *tls.Conn, peer string) (net.Conn, error) {
	c := &PeerConn{Conn: conn, Peer: peer, policy: m.policy, mux: m}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		_ = conn.Close()
		return nil, net.ErrClosed
	}
	m.open[c] = struct{}{}
	return c, nil
}

func (m *Mux) forget(c *PeerConn) {
	m.mu.Lock()
	delete(m.open, c)
	m.mu.Unlock()
}

// Link is one channel of the cluster port: a net.Listener for incoming
// connections and a dialer for outgoing ones, both authenticated.
type Link struct {
	mux     *Mux
	channel byte
	conns   chan net.Conn

	closeOnce sync.Once
	closed    chan struct{}
}

func (l *Link) deliver(conn net.Conn) {
	select {
	case l.conns <- conn:
	case <-l.closed:
		_ = conn.Close()
	}
}

// Accept waits for the next authenticated connection on this channel.
func (l *Link) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops this channel's listener.
func (l *Link) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr is the cluster port's address.
func (l *Link) Addr() net.Addr { return l.mux.Addr() }

// Dial connects to this channel on the node at addr.
func (l *Link) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, l.mux.identity.client)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("cluster handshake with %s: %w", addr, err)
	}
	peer := peerID(conn.ConnectionState())
	if l.mux.policy != nil && !l.mux.policy.Allowed(peer) {
		_ = conn.Close()
		return nil, fmt.Errorf("%s (%s): %w", peer, addr, ErrLinkCut)
	}
	_ = raw.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := conn.Write([]byte{l.channel}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = raw.SetWriteDeadline(time.Time{})
	return l.mux.wrap(conn, peer)
}

// PeerConn is an authenticated cluster connection; Peer is the node ID the
// other side's certificate names.
type PeerConn struct {
	net.Conn
	Peer   string
	policy Policy
	mux    *Mux
}

// Close closes the connection and lets the Mux forget it.
func (c *PeerConn) Close() error {
	c.mux.forget(c)
	return c.Conn.Close()
}

func (c *PeerConn) check() error {
	if c.policy != nil && !c.policy.Allowed(c.Peer) {
		_ = c.Conn.Close()
		return ErrLinkCut
	}
	return nil
}

func (c *PeerConn) Read(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if err == nil {
		// A partition that began while we were blocked must still cut the link.
		if cerr := c.check(); cerr != nil {
			return 0, cerr
		}
	}
	return n, err
}

func (c *PeerConn) Write(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
