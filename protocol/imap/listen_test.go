package imap

import (
	"net"
	"sync"
)

// oneConn is a listener that yields one connection, then blocks until
// closed: how the tests hand the server a net.Pipe through the real
// accept path (protocol/listen).
type oneConn struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return inProcessAddr{} }

// serveOne serves conn as if accepted on the plain or implicit-TLS port.
func serveOne(s *Server, conn net.Conn, implicitTLS bool) {
	l := &oneConn{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- conn
	_ = s.acceptLoop(l, implicitTLS)
}
