package clusternet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func newMux(t *testing.T, secret, id string, policy Policy) *Mux {
	t.Helper()
	ident, err := NewIdentity([]byte(secret), id)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Listen("127.0.0.1:0", ident, policy, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func echo(l *Link) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
	}
}

func TestChannelsAreAuthenticatedAndSeparate(t *testing.T) {
	const secret = "correct horse battery staple"
	a := newMux(t, secret, "a", nil)
	b := newMux(t, secret, "b", nil)
	go func() { _ = b.Serve() }()
	raftLn := b.Channel(ChannelRaft)
	go echo(raftLn)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := a.Channel(ChannelRaft).Dial(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.(*PeerConn).Peer; got != "b" {
		t.Fatalf("peer id = %q, want b", got)
	}
	msg := []byte("hello over mutual TLS")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q", got)
	}

	// A channel nobody serves is closed by the server.
	other, err := a.Channel(ChannelBlob).Dial(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := other.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on an unserved channel succeeded")
	}
}

func TestWrongSecretIsRefused(t *testing.T) {
	good := newMux(t, "the real cluster secret", "good", nil)
	go func() { _ = good.Serve() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := good.Channel(ChannelRPC).Accept()
		if err == nil {
			accepted <- c
		}
	}()
	intruder := newMux(t, "a guessed wrong secret", "intruder", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := intruder.Channel(ChannelRPC).Dial(ctx, good.Addr().String()); err == nil {
		_ = c.Close()
		t.Fatal("dial with the wrong secret succeeded")
	}
	// Plain TCP without TLS never reaches a channel either.
	raw, err := net.Dial("tcp", good.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("F\r\nGET / HTTP/1.0\r\n\r\n"))
	_ = raw.Close()
	select {
	case <-accepted:
		t.Fatal("an unauthenticated connection reached the channel")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestShortSecretRejected(t *testing.T) {
	if _, err := NewIdentity([]byte("short"), "x"); !errors.Is(err, ErrWeakSecret) {
		t.Fatalf("err = %v, want ErrWeakSecret", err)
	}
	if _, err := GossipKey(nil); !errors.Is(err, ErrWeakSecret) {
		t.Fatalf("err = %v, want ErrWeakSecret", err)
	}
}

type cutPolicy struct{ cut atomic.Bool }

func (p *cutPolicy) Allowed(string) bool { return !p.cut.Load() }

func TestPolicyCutsExistingAndNewConnections(t *testing.T) {
	const secret = "correct horse battery staple"
	pa, pb := &cutPolicy{}, &cutPolicy{}
	a := newMux(t, secret, "a", pa)
	b := newMux(t, secret, "b", pb)
	go func() { _ = b.Serve() }()
	go echo(b.Channel(ChannelRaft))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := a.Channel(ChannelRaft).Dial(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pa.cut.Store(true)
	pb.cut.Store(true)
	if _, err := conn.Write([]byte("x")); !errors.Is(err, ErrLinkCut) {
		t.Fatalf("write after cut: %v", err)
	}
	if _, err := a.Channel(ChannelRaft).Dial(ctx, b.Addr().String()); !errors.Is(err, ErrLinkCut) {
		t.Fatalf("dial after cut: %v", err)
	}
}

// A node that stops must drop the connections it accepted: a peer that kept
// one would take the stopped node's answers for those of whatever replaces
// it on the same address.
func TestCloseDropsAcceptedConnections(t *testing.T) {
	const secret = "correct horse battery staple"
	a := newMux(t, secret, "a", nil)
	b := newMux(t, secret, "b", nil)
	go func() { _ = b.Serve() }()
	go echo(b.Channel(ChannelRPC))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := a.Channel(ChannelRPC).Dial(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 4)
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("ping"))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("read %q from a closed node", buf[:n])
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the closed node left the connection open")
	}
}
