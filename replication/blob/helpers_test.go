package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tcpLink is a plain-TCP Link on loopback for tests. It remembers accepted
// connections so a test can cut them (as a peer restart would).
type tcpLink struct {
	ln net.Listener

	mu       sync.Mutex
	accepted []net.Conn
}

func newTCPLink(t testing.TB) *tcpLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return &tcpLink{ln: ln}
}

func (l *tcpLink) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err == nil {
		l.mu.Lock()
		l.accepted = append(l.accepted, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *tcpLink) Close() error   { return l.ln.Close() }
func (l *tcpLink) Addr() net.Addr { return l.ln.Addr() }
func (l *tcpLink) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// cutAccepted closes every connection accepted so far, from the server side.
func (l *tcpLink) cutAccepted() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.accepted {
		_ = c.Close()
	}
	l.accepted = nil
}

func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// body returns n pseudo-random but compressible-ish bytes unique to seed.
func body(seed uint64, n int) []byte {
	var key [32]byte
	binary.BigEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	for i := range b {
		// Text-like: a small alphabet so zstd has something to do.
		b[i] = "abcdefghij klmnop\r\n"[b[i]%19]
	}
	if n >= 8 {
		binary.BigEndian.PutUint64(b, seed)
	}
	return b
}

func mustPut(t testing.TB, s *Store, b []byte) ID {
	t.Helper()
	id, n, err := s.Put(context.Background(), bytes.NewReader(b), 0)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if n != int64(len(b)) {
		t.Fatalf("put size %d, want %d", n, len(b))
	}
	if id != ID(sha256.Sum256(b)) {
		t.Fatalf("put id %s is not the SHA-256 of the body", id)
	}
	return id
}

func readAll(t testing.TB, s *Store, id ID) []byte {
	t.Helper()
	b, err := s.Open(context.Background(), id)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tmpFiles(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), tmpDirName))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// flipByte corrupts one byte of a stored file at offset off from its end.
func flipByte(t testing.TB, s *Store, id ID, fromEnd int64) {
	t.Helper()
	p := s.path(id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var b [1]byte
	off := fi.Size() - fromEnd
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}
