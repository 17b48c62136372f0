package listen

import (
	"context"
	"errors"
	"net"
	"sync"
)

// Group is what a server that hands each connection to its own goroutine
// needs around its Listeners: it serves any number of them, tracks the
// connections being handled, refuses new work once closed, and its Close
// ends all of it. The zero value is not usable; call NewGroup.
type Group struct {
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[*Listener]struct{}
	conns     map[net.Conn]struct{}
	handlers  sync.WaitGroup
}

// NewGroup returns an open Group.
func NewGroup() *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{
		ctx: ctx, cancel: cancel,
		listeners: make(map[*Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}
}

// Context is canceled by Close: the handlers' work (store calls, ...)
// derives from it, so Close cuts that short too.
func (g *Group) Context() context.Context { return g.ctx }

// Serve accepts on inner through New(inner, opts) and runs handle for
// each connection on its own goroutine; the connection is closed when
// handle returns (so handle need not close it). It returns net.ErrClosed
// after Close (inner is closed then), or the error that made inner fail
// for good.
func (g *Group) Serve(inner net.Listener, opts Options, handle func(net.Conn)) error {
	l := New(inner, opts)
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = l.Close()
		return net.ErrClosed
	}
	g.listeners[l] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.listeners, l)
		g.mu.Unlock()
		_ = l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if g.isClosed() || errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			return err
		}
		if !g.admit(conn) {
			_ = conn.Close()
			return net.ErrClosed
		}
		go func() {
			defer g.handlers.Done()
			defer g.release(conn)
			handle(conn)
		}()
	}
}

// admit registers a connection; false once the group is closed. When
// true, the caller owes one g.handlers.Done.
func (g *Group) admit(conn net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.handlers.Add(1)
	g.conns[conn] = struct{}{}
	return true
}

// release closes conn (which frees its connection slot) and forgets it.
func (g *Group) release(conn net.Conn) {
	_ = conn.Close()
	g.mu.Lock()
	delete(g.conns, conn)
	g.mu.Unlock()
}

// Open counts the connections being handled now.
func (g *Group) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

func (g *Group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close cancels Context, stops every listener, closes every connection
// being handled and waits for the handlers to return. Serve calls after
// it return net.ErrClosed. Calling it again only waits.
func (g *Group) Close() error {
	g.mu.Lock()
	g.closed = true
	g.cancel()
	// Once closed, nothing is added to either map: these lists are
	// complete, and they are closed outside the lock, since a Listener's
	// Close waits for its refusals to be written.
	listeners := make([]*Listener, 0, len(g.listeners))
	for l := range g.listeners {
		listeners = append(listeners, l)
	}
	conns := make([]net.Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, l := range listeners {
		_ = l.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	g.handlers.Wait()
	return nil
}
