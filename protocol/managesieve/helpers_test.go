package managesieve

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

const (
	testUser = "alice@example.test"
	testPass = "secret"
)

// fakeStore is an in-memory Store and Authenticator with one account
// and failure switches.
type fakeStore struct {
	mu         sync.Mutex
	scripts    map[string]string
	active     string
	maxScripts int
	err        error // every script call fails with it when set
	authErr    error // Authenticate fails with it when set
	puts       int
}

func newFakeStore() *fakeStore { return &fakeStore{scripts: map[string]string{}, maxScripts: 5} }

func (f *fakeStore) Authenticate(ctx context.Context, username, password string) (state.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.authErr != nil {
		return state.Account{}, f.authErr
	}
	if !strings.EqualFold(username, testUser) || password != testPass {
		return state.Account{}, replication.ErrAuthFailed
	}
	return state.Account{Address: testUser}, nil
}

func (f *fakeStore) check(account string) error {
	if f.err != nil {
		return f.err
	}
	if account != testUser {
		return fmt.Errorf("unexpected account %q", account)
	}
	return nil
}

func (f *fakeStore) ListScripts(ctx context.Context, account string) ([]Script, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return nil, err
	}
	var out []Script
	for name := range f.scripts {
		out = append(out, Script{Name: name, Active: name == f.active})
	}
	slices.SortFunc(out, func(a, b Script) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *fakeStore) GetScript(ctx context.Context, account, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return "", err
	}
	s, ok := f.scripts[name]
	if !ok {
		return "", ErrNoSuchScript
	}
	return s, nil
}

func (f *fakeStore) PutScript(ctx context.Context, account, name, content string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return err
	}
	if _, ok := f.scripts[name]; !ok && len(f.scripts) >= f.maxScripts {
		return ErrTooMany
	}
	f.scripts[name] = content
	f.puts++
	return nil
}

func (f *fakeStore) DeleteScript(ctx context.Context, account, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return err
	}
	if _, ok := f.scripts[name]; !ok {
		return ErrNoSuchScript
	}
	if f.active == name {
		return ErrActive
	}
	delete(f.scripts, name)
	return nil
}

func (f *fakeStore) RenameScript(ctx context.Context, account, oldName, newName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return err
	}
	s, ok := f.scripts[oldName]
	if !ok {
		return ErrNoSuchScript
	}
	if _, ok := f.scripts[newName]; ok {
		return ErrExists
	}
	delete(f.scripts, oldName)
	f.scripts[newName] = s
	if f.active == oldName {
		f.active = newName
	}
	return nil
}

func (f *fakeStore) SetActive(ctx context.Context, account, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return err
	}
	if _, ok := f.scripts[name]; !ok && name != "" {
		return ErrNoSuchScript
	}
	f.active = name
	return nil
}

func (f *fakeStore) HaveSpace(ctx context.Context, account, name string, size int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(account); err != nil {
		return err
	}
	if _, ok := f.scripts[name]; !ok && len(f.scripts) >= f.maxScripts {
		return ErrTooMany
	}
	if size > 10000 {
		return ErrTooBig
	}
	return nil
}

func (f *fakeStore) get(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.scripts[name]
	return s, ok
}

func (f *fakeStore) activeName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

func (f *fakeStore) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// testCheck is a stand-in for the Sieve compiler: a script that contains
// "error" is invalid.
func testCheck(script []byte) error {
	if i := strings.Index(string(script), "error"); i >= 0 {
		return fmt.Errorf("line %d: unknown command \"error\"", strings.Count(string(script[:i]), "\n")+1)
	}
	return nil
}

// testServer runs a server over st on a loopback port.
type testServer struct {
	*Server
	addr string
	tls  *tls.Config // client side, trusts the server's certificate
}

func testLimiter() *auth.Limiter {
	return auth.NewLimiter(auth.LimiterOptions{FailDelay: time.Millisecond, IPFailures: 1000})
}

func startServer(t *testing.T, st *fakeStore, opts Options, tweak ...func(*Config)) *testServer {
	t.Helper()
	serverTLS, clientTLS := testCert(t)
	cfg := Config{
		Store: st, Auth: st, Check: testCheck, Hostname: "sieve.test", TLS: serverTLS, Limiter: testLimiter(),
		Extensions: func() []string { return []string{"fileinto", "envelope"} }, MaxRedirects: 5, Options: opts,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
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

// client is a minimal ManageSieve client that shows the test the raw
// protocol.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dial connects and reads the greeting (capabilities and OK).
func dial(t testing.TB, addr string) (*client, []string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	caps, status := c.response()
	if !strings.HasPrefix(status, "OK") {
		t.Fatalf("greeting ends in %q", status)
	}
	return c, caps
}

// rawLine reads one line without its CRLF.
func (c *client) rawLine() string {
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

// item reads one response line; a server literal {n} at its end is read
// and put in its place, as the string it is.
func (c *client) item() string {
	c.t.Helper()
	line := c.rawLine()
	body, n, ok := cutLiteral([]byte(line))
	if !ok {
		return line
	}
	if strings.HasSuffix(line, "+}") {
		c.t.Fatalf("server sent a client literal: %q", line)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		c.t.Fatal(err)
	}
	return string(body) + quote(string(buf)) + c.rawLine()
}

// response reads data lines up to the OK, NO or BYE that ends a
// response.
func (c *client) response() (data []string, status string) {
	c.t.Helper()
	for {
		l := c.item()
		for _, s := range []string{"OK", "NO", "BYE"} {
			if l == s || strings.HasPrefix(l, s+" ") {
				return data, l
			}
		}
		data = append(data, l)
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends one command line and returns the status line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	_, status := c.response()
	return status
}

// ok sends a command that must succeed and returns its data lines.
func (c *client) ok(line string) []string {
	c.t.Helper()
	c.send(line + "\r\n")
	data, status := c.response()
	if !strings.HasPrefix(status, "OK") {
		c.t.Fatalf("%s: %s", line, status)
	}
	return data
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func (c *client) login() {
	c.t.Helper()
	c.ok(`AUTHENTICATE "PLAIN" "` + plain(testUser, testPass) + `"`)
}

// literal is s as a client literal {n+}.
func literal(s string) string { return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s }

// closed reports whether the server closed the connection (reads EOF).
func (c *client) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "connection reset"))
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
