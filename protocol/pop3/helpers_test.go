package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// fakeStore is an in-memory mailStore with one account and failure
// switches.
type fakeStore struct {
	mu          sync.Mutex
	user, pass  string
	uidValidity uint32
	nextUID     uint32
	msgs        []fakeMsg
	bodies      map[state.BlobID][]byte

	openErr, expungeErr, bodyErr error
	// expungeLate: Expunge applies, then reports expungeErr anyway (an
	// outcome the caller cannot know).
	expungeLate bool
	expunges    [][]uint32
	seen        []uint32
	bodyOpens   int
}

type fakeMsg struct {
	uid  uint32
	blob state.BlobID
	seen bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{user: "alice@example.test", pass: "secret", uidValidity: 1700000000, nextUID: 1, bodies: map[state.BlobID][]byte{}}
}

// add delivers a message and returns its UID.
func (f *fakeStore) add(body string) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var id state.BlobID
	copy(id[:], []byte(body+strings.Repeat("#", 32))) // distinct enough for tests
	id[31] = byte(f.nextUID)
	f.bodies[id] = []byte(body)
	uid := f.nextUID
	f.nextUID++
	f.msgs = append(f.msgs, fakeMsg{uid: uid, blob: id})
	return uid
}

func (f *fakeStore) uids() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint32
	for _, m := range f.msgs {
		out = append(out, m.uid)
	}
	return out
}

func (f *fakeStore) Authenticate(ctx context.Context, username, password string) (state.Account, error) {
	if !strings.EqualFold(username, f.user) || password != f.pass {
		return state.Account{}, replication.ErrAuthFailed
	}
	return state.Account{Address: f.user}, nil
}

func (f *fakeStore) OpenMaildrop(ctx context.Context, account string) (maildrop, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.openErr != nil {
		return maildrop{}, f.openErr
	}
	md := maildrop{mailboxID: 7, uidValidity: f.uidValidity}
	for _, m := range f.msgs {
		md.msgs = append(md.msgs, entry{uid: m.uid, blob: m.blob, rawSize: int64(len(f.bodies[m.blob])), seen: m.seen})
	}
	return md, nil
}

func (f *fakeStore) Exists(ctx context.Context, account string, mailboxID uint64, uid uint32) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.msgs, func(m fakeMsg) bool { return m.uid == uid }), nil
}

type memBody struct{ *bytes.Reader }

func (memBody) Close() error { return nil }

func (f *fakeStore) OpenBody(ctx context.Context, id state.BlobID) (body, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bodyErr != nil {
		return nil, f.bodyErr
	}
	b, ok := f.bodies[id]
	if !ok {
		return nil, replication.ErrBodyUnavailable
	}
	f.bodyOpens++
	return memBody{bytes.NewReader(b)}, nil
}

func (f *fakeStore) Expunge(ctx context.Context, account string, mailboxID uint64, uids []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.expungeErr != nil && !f.expungeLate {
		return f.expungeErr
	}
	f.expunges = append(f.expunges, slices.Clone(uids))
	f.msgs = slices.DeleteFunc(f.msgs, func(m fakeMsg) bool { return slices.Contains(uids, m.uid) })
	return f.expungeErr
}

func (f *fakeStore) MarkSeen(ctx context.Context, account string, mailboxID uint64, uids []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, uids...)
	for i := range f.msgs {
		if slices.Contains(uids, f.msgs[i].uid) {
			f.msgs[i].seen = true
		}
	}
	return nil
}

func (f *fakeStore) expungeLog() [][]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.expunges)
}

func (f *fakeStore) seenUIDs() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seen)
}

// testServer runs a server over st on a loopback port.
type testServer struct {
	*Server
	addr string
	tls  *tls.Config // client side, trusts the server's certificate
}

func startServer(t *testing.T, st mailStore, opts Options, tweak ...func(*Server)) *testServer {
	t.Helper()
	serverTLS, clientTLS := testCert(t)
	lim := auth.NewLimiter(auth.LimiterOptions{FailDelay: time.Millisecond, IPFailures: 1000})
	s, err := newServer(Config{Hostname: "pop.test", TLS: serverTLS, Limiter: lim, Options: opts}, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tweak {
		f(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), tls: clientTLS}
}

// testCert makes a self-signed certificate for "localhost".
func testCert(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c, err := localcert.New(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.ServerConfig(), c.ClientConfig()
}

// client is a minimal POP3 client that shows the test the raw protocol.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if g := c.line(); !strings.HasPrefix(g, "+OK ") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

func newReader(conn net.Conn) *bufio.Reader { return bufio.NewReader(conn) }

// line reads one response line without its CRLF.
func (c *client) line() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (after %q)", err, s)
	}
	if !strings.HasSuffix(s, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends a command and returns the status line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

// ok sends a command that must succeed and returns the status line.
func (c *client) ok(line string) string {
	c.t.Helper()
	s := c.cmd(line)
	if !strings.HasPrefix(s, "+OK") {
		c.t.Fatalf("%s: %s", line, s)
	}
	return s
}

// lines reads a multi-line body up to ".", undoing dot-stuffing.
func (c *client) lines() []string {
	c.t.Helper()
	var out []string
	for {
		s := c.line()
		if s == "." {
			return out
		}
		if strings.HasPrefix(s, ".") {
			s = s[1:]
		}
		out = append(out, s)
	}
}

// message reads a multi-line body as the exact octets (each line with CRLF).
func (c *client) message() []byte {
	var b bytes.Buffer
	for _, l := range c.lines() {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func (c *client) login() {
	c.t.Helper()
	c.ok("USER alice@example.test")
	c.ok("PASS secret")
}

// closed reports whether the server closed the connection (reads EOF).
func (c *client) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
