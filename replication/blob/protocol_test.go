package blob

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// peer is one store served over a loopback link.
type peer struct {
	store  *Store
	link   *tcpLink
	server *Server
	client *Client
	addr   string
	stop   context.CancelFunc
	done   chan error
}

func startPeer(t testing.TB, opts Options) *peer {
	t.Helper()
	p := &peer{store: openStore(t, opts), link: newTCPLink(t)}
	p.addr = p.link.Addr().String()
	p.server = NewServer(p.store, p.link, slog.New(slog.DiscardHandler))
	p.client = NewClient(p.store, p.link)
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.done = make(chan error, 1)
	go func() { p.done <- p.server.Serve(ctx) }()
	t.Cleanup(p.shutdown)
	return p
}

func (p *peer) shutdown() {
	if p.stop != nil {
		p.stop()
		<-p.done
		p.stop = nil
	}
	_ = p.client.Close()
}

func TestPushFetchHolds(t *testing.T) {
	a, b := startPeer(t, Options{}), startPeer(t, Options{MemoryBodyLimit: 64 << 10})
	ctx := context.Background()
	small := body(1, 3000)
	large := body(2, 500<<10)
	idSmall := mustPut(t, a.store, small)
	idLarge := mustPut(t, a.store, large)
	missing := Sum([]byte("nobody has this"))

	for _, id := range []ID{idSmall, idLarge} {
		if err := a.client.Push(ctx, b.addr, id); err != nil {
			t.Fatalf("push: %v", err)
		}
	}
	if got := readAll(t, b.store, idLarge); !bytes.Equal(got, large) {
		t.Fatal("pushed content differs")
	}
	held, err := a.client.Holds(ctx, b.addr, []ID{idSmall, missing, idLarge})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true}; !equalBools(held, want) {
		t.Fatalf("Holds = %v, want %v", held, want)
	}

	// Fetch back into a fresh store.
	c := startPeer(t, Options{})
	if err := c.client.Fetch(ctx, b.addr, idSmall); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c.store, idSmall); !bytes.Equal(got, small) {
		t.Fatal("fetched content differs")
	}
	if err := c.client.Fetch(ctx, b.addr, missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of missing blob: %v, want ErrNotFound", err)
	}
	if err := c.client.Push(ctx, b.addr, missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("push of a blob not held locally: %v, want ErrNotFound", err)
	}
	// The connection survives error answers: Holds in batches above the limit.
	many := make([]ID, maxHoldsBatch*2+5)
	for i := range many {
		many[i] = Sum([]byte{byte(i), byte(i >> 8)})
	}
	many[maxHoldsBatch+1] = idSmall
	held, err = c.client.Holds(ctx, b.addr, many)
	if err != nil || len(held) != len(many) {
		t.Fatalf("big Holds: %d answers, %v", len(held), err)
	}
	for i, h := range held {
		if h != (i == maxHoldsBatch+1) {
			t.Fatalf("big Holds answer %d = %v", i, h)
		}
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFetchOfCorruptPeerCopyIsRejected(t *testing.T) {
	a, b := startPeer(t, Options{}), startPeer(t, Options{})
	id := mustPut(t, a.store, body(5, 50000))
	flipByte(t, a.store, id, 1000) // the server sends stored bytes as they are
	err := b.client.Fetch(context.Background(), a.addr, id)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fetch of corrupt copy: %v, want ErrCorrupt", err)
	}
	if b.store.Has(id) {
		t.Fatal("corrupt copy accepted")
	}
	// Pushing the corrupt copy is refused by the receiver too.
	if err := a.client.Push(context.Background(), b.addr, id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("push of corrupt copy: %v, want ErrCorrupt", err)
	}
	// And the connection pool still works afterwards.
	good := mustPut(t, a.store, []byte("fine"))
	if err := a.client.Push(context.Background(), b.addr, good); err != nil {
		t.Fatal(err)
	}
}

func TestManyConcurrentPushes(t *testing.T) {
	src := startPeer(t, Options{})
	dsts := []*peer{startPeer(t, Options{}), startPeer(t, Options{})}
	const deliveries = 32
	ids := make([]ID, deliveries)
	for i := range ids {
		ids[i] = mustPut(t, src.store, body(uint64(100+i), 4096))
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		for _, d := range dsts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := src.client.Push(ctx, d.addr, id); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	for _, d := range dsts {
		for _, id := range ids {
			if !d.store.Has(id) {
				t.Fatalf("peer lacks %s", id)
			}
		}
	}
}

// A pooled connection that the peer closed meanwhile (restart, idle timeout)
// is replaced transparently.
func TestClientRecoversFromStalePooledConnection(t *testing.T) {
	a, b := startPeerPair(t)
	id := mustPut(t, a.store, []byte("first"))
	ctx := context.Background()
	if err := a.client.Push(ctx, b.addr, id); err != nil {
		t.Fatal(err)
	}
	b.link.cutAccepted()
	id2 := mustPut(t, a.store, []byte("second"))
	if err := a.client.Push(ctx, b.addr, id2); err != nil {
		t.Fatalf("push after the peer dropped the pooled connection: %v", err)
	}
	if _, err := a.client.Holds(ctx, b.addr, []ID{id, id2}); err != nil {
		t.Fatal(err)
	}
}

func startPeerPair(t *testing.T) (*peer, *peer) {
	return startPeer(t, Options{}), startPeer(t, Options{})
}

// A peer that accepts and never answers: requests end at their ctx deadline
// or cancellation.
func TestRequestsHonourCtxDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	heard := make(chan struct{}, 16)
	var wg sync.WaitGroup
	accepting := make(chan struct{})
	defer func() {
		_ = ln.Close()
		<-accepting
		wg.Wait()
	}()
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { // read everything, answer nothing
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					select {
					case heard <- struct{}{}:
					default:
					}
				}
			}()
		}
	}()
	a := startPeer(t, Options{})
	id := mustPut(t, a.store, []byte("x"))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.client.Fetch(ctx, ln.Addr().String(), id); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fetch from a silent peer: %v, want deadline exceeded", err)
	}
	for len(heard) > 0 {
		<-heard
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		<-heard // the push has been sent; cancel while it waits for its answer
		cancel2()
	}()
	if err := a.client.Push(ctx2, ln.Addr().String(), id); !errors.Is(err, context.Canceled) {
		t.Fatalf("push to a silent peer: %v, want canceled", err)
	}
	_ = a.client.Close()
}

// rawConn talks to a server byte by byte, as a hostile or broken peer would.
func rawConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// expectStatus reads one status and checks it.
func expectStatus(t *testing.T, br *bufio.Reader, want byte) {
	t.Helper()
	err := readStatus(br, "server")
	var got byte = statusOK
	var re *RemoteError
	if errors.As(err, &re) {
		got = re.Status
	} else if err != nil {
		t.Fatalf("reading status: %v", err)
	}
	if got != want {
		t.Fatalf("status %d (%v), want %d", got, err, want)
	}
}

func expectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("server kept the connection open after a bad request")
	}
}

func TestServerRejectsHostileFrames(t *testing.T) {
	srv := startPeer(t, Options{MaxBlobSize: 1 << 20})
	good := mustPut(t, srv.store, []byte("good"))
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	t.Run("bad preamble", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		expectStatus(t, br, statusBadRequest)
		expectClosed(t, br)
	})
	t.Run("unknown op", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		_, _ = c.Write(cat(preamble[:], []byte{'Z'}))
		expectStatus(t, br, statusBadRequest)
		expectClosed(t, br)
	})
	t.Run("huge holds count", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		_, _ = c.Write(cat(preamble[:], []byte{opHolds}, u32(1<<31)))
		expectStatus(t, br, statusBadRequest)
		expectClosed(t, br)
	})
	t.Run("huge push length", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		_, _ = c.Write(cat(preamble[:], []byte{opPush}, good[:], u64(1<<62)))
		expectStatus(t, br, statusTooLarge)
		expectClosed(t, br)
	})
	t.Run("garbage push body keeps connection usable", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		junk := bytes.Repeat([]byte{0xEE}, 5000)
		_, _ = c.Write(cat(preamble[:], []byte{opPush}, good[:], u64(uint64(len(junk))), junk))
		expectStatus(t, br, statusCorrupt)
		_, _ = c.Write(cat([]byte{opHolds}, u32(1), good[:]))
		expectStatus(t, br, statusOK)
		n, _ := readUint32(br)
		bm, _ := br.ReadByte()
		if n != 1 || bm != 1 {
			t.Fatalf("holds after rejected push: n=%d bitmap=%x", n, bm)
		}
	})
	t.Run("push claiming a blob it is not", func(t *testing.T) {
		c, br := rawConn(t, srv.addr)
		other := storedForm(t, []byte("other content"))
		_, _ = c.Write(cat(preamble[:], []byte{opPush}, good[:], u64(uint64(len(other))), other))
		expectStatus(t, br, statusCorrupt)
	})
	t.Run("truncated push then hang up", func(t *testing.T) {
		c, _ := rawConn(t, srv.addr)
		_, _ = c.Write(cat(preamble[:], []byte{opPush}, good[:], u64(1000), []byte("short")))
		_ = c.Close()
	})
	t.Run("truncated frames", func(t *testing.T) {
		frames := [][]byte{
			{opFetch, 1, 2, 3},
			{opHolds, 0, 0},
			cat([]byte{opHolds}, u32(3), good[:]),
			cat([]byte{opPush}, good[:16]),
		}
		for _, f := range frames {
			c, _ := rawConn(t, srv.addr)
			_, _ = c.Write(cat(preamble[:], f))
			_ = c.Close()
		}
	})
	t.Run("random bytes", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 200; i++ {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, r.IntN(300))
			for j := range junk {
				junk[j] = byte(r.Uint32())
			}
			if i%2 == 0 {
				junk = cat(preamble[:], junk) // get past the preamble half the time
			}
			_, _ = c.Write(junk)
			_ = c.Close()
		}
	})

	// After all that, the server still serves a well-behaved client.
	cl := startPeer(t, Options{})
	if err := cl.client.Fetch(context.Background(), srv.addr, good); err != nil {
		t.Fatalf("server unusable after hostile frames: %v", err)
	}
	if left := tmpFiles(t, srv.store); len(left) != 0 {
		eventually(t, "server temp files cleaned", func() bool { return len(tmpFiles(t, srv.store)) == 0 })
	}
}

func TestServeStopsWithCtx(t *testing.T) {
	p := startPeer(t, Options{})
	// An idle client connection must not keep Serve from returning.
	c, _ := rawConn(t, p.addr)
	_, _ = c.Write(preamble[:])
	p.stop()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("Serve returned %v after ctx ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
	p.stop = nil
	if _, err := os.Stat(p.store.Dir()); err != nil {
		t.Fatal(err)
	}
}
