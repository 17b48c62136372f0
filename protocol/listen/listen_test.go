package listen

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/protocol/auth"
)

// flaky fails its first Accepts with err, then passes through.
type flaky struct {
	net.Listener
	fails atomic.Int32
	err   error
}

func (f *flaky) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.Listener.Accept()
}

func tcp(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serveHello answers every accepted connection with "hello\n".
func serveHello(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			_ = c.Close()
		}
	}()
}

func readAll(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestOutOfFileDescriptorsIsRetried(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		inner := &flaky{Listener: tcp(t), err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}}
		inner.fails.Store(3)
		l := New(inner, Options{Name: "test"})
		serveHello(l)
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAll(t, c)
		_ = c.Close()
		_ = l.Close()
		if err != nil || got != "hello\n" {
			t.Fatalf("%v: after accept errors got %q, %v: the listener stopped", errno, got, err)
		}
	}
}

func TestPermanentAcceptErrorEndsAccept(t *testing.T) {
	boom := errors.New("boom")
	inner := &flaky{Listener: tcp(t), err: boom}
	inner.fails.Store(1)
	l := New(inner, Options{})
	defer l.Close()
	if _, err := l.Accept(); !errors.Is(err, boom) {
		t.Fatalf("Accept = %v, want boom", err)
	}
}

func TestSilentTLSClientIsDropped(t *testing.T) {
	cert, err := localcert.New(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inner := tcp(t)
	l := New(inner, Options{TLS: cert.ServerConfig(), HandshakeTimeout: 100 * time.Millisecond,
		Limit: auth.NewConnLimit(10, 10)})
	defer l.Close()
	serveHello(l)
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := readAll(t, c); err != nil {
		t.Fatalf("a silent client was not dropped: %v", err)
	}
	// Its slot is free again.
	open := func() int { return l.opts.Limit.Open() }
	deadline := time.Now().Add(20 * time.Second)
	for open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection slots still held", open())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOverTheLimitIsRefused(t *testing.T) {
	inner := tcp(t)
	l := New(inner, Options{Limit: auth.NewConnLimit(1, 1), Refuse: func(c net.Conn, why auth.Refusal) {
		_, _ = c.Write([]byte("busy " + string(why) + "\n"))
	}})
	defer l.Close()
	first, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	held, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, second)
	if got != "busy max_connections\n" {
		t.Fatalf("second connection got %q", got)
	}
	_ = held.Close()
	serveHello(l)
	third, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, third); got != "hello\n" {
		t.Fatalf("after a release got %q", got)
	}
}
