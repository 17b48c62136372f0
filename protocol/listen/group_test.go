package listen

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// waitUntil polls cond for up to 20s: generous, for a loaded machine.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGroupCloseEndsConnectionsAndWaitsForHandlers(t *testing.T) {
	g := NewGroup()
	inner := tcp(t)
	var returned atomic.Int32
	release := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(inner, Options{Name: "test"}, func(c net.Conn) {
			// Block on the client until Close closes the connection.
			_, _ = c.Read(make([]byte, 1))
			// Then linger: Close must wait for this.
			<-release
			returned.Add(1)
		})
	}()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	waitUntil(t, "the connection to be handled", func() bool { return g.Open() == 1 })

	closed := make(chan struct{})
	go func() {
		_ = g.Close()
		close(closed)
	}()
	select {
	case <-g.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not cancel Context")
	}
	// The handler's Read returns once Close closed its connection; it is
	// now held in <-release, so Close must still be waiting.
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after the handler did")
	}
	if returned.Load() != 1 {
		t.Fatal("Close returned before the handler")
	}
	if g.Open() != 0 {
		t.Fatalf("%d connections still tracked after Close", g.Open())
	}
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve = %v, want net.ErrClosed", err)
	}
	// The client sees the server's end closed.
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read after Close = %v, want EOF or reset", err)
	}
}

func TestGroupHandlerReturnClosesConnection(t *testing.T) {
	g := NewGroup()
	defer g.Close()
	inner := tcp(t)
	go func() { _ = g.Serve(inner, Options{}, func(c net.Conn) { _, _ = c.Write([]byte("hi\n")) }) }()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := readAll(t, c)
	if err != nil || got != "hi\n" {
		t.Fatalf("got %q, %v: the connection was not closed after its handler returned", got, err)
	}
	waitUntil(t, "the connection to be forgotten", func() bool { return g.Open() == 0 })
}

func TestGroupServeAfterClose(t *testing.T) {
	g := NewGroup()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	inner := tcp(t)
	called := false
	if err := g.Serve(inner, Options{}, func(net.Conn) { called = true }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve after Close = %v, want net.ErrClosed", err)
	}
	if called {
		t.Fatal("a handler ran after Close")
	}
	// Serve closed the listener it was given.
	if _, err := inner.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("inner Accept after Serve = %v, want net.ErrClosed", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestGroupPermanentAcceptError(t *testing.T) {
	g := NewGroup()
	defer g.Close()
	boom := errors.New("boom")
	inner := &flaky{Listener: tcp(t), err: boom}
	inner.fails.Store(1)
	if err := g.Serve(inner, Options{}, func(net.Conn) {}); !errors.Is(err, boom) {
		t.Fatalf("Serve = %v, want boom", err)
	}
}
