package smtp

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// fakeStore is an in-memory backend with the store's semantics for what
// the SMTP server relies on.
type fakeStore struct {
	mu         sync.Mutex
	domains    map[string]bool
	accounts   map[string]*state.Account
	passwords  map[string]string
	aliases    map[string][]string
	messages   []fakeMessage
	bodies     map[state.BlobID][]byte // ingested, by ID
	maxSize    int64
	deliverErr error // returned after reading the body, if set
	barrierErr error
	// afterRead runs after the body is read, before the "commit".
	afterRead func()
	hang      bool                // wait for the context instead of committing
	queued    []state.QueueTarget // outside recipients committed
	// gate, if set, holds the "commit" until it is closed; canceled while
	// held, the commit's outcome is unknown (it was proposed).
	gate chan struct{}
}

type fakeMessage struct {
	Body     []byte
	Accounts []string
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		domains:   map[string]bool{"example.test": true},
		accounts:  map[string]*state.Account{},
		passwords: map[string]string{},
		aliases:   map[string][]string{},
		maxSize:   10 << 20,
	}
}

// addUser creates an account; change, if given, adjusts it (quota,
// usage, disabled) under the store's lock.
func (f *fakeStore) addUser(addr, password string, change ...func(*state.Account)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := &state.Account{Address: addr}
	for _, c := range change {
		c(a)
	}
	f.accounts[addr] = a
	f.passwords[addr] = password
}

func (f *fakeStore) setAlias(addr string, targets ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aliases[addr] = targets
}

func (f *fakeStore) stored() []fakeMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMessage(nil), f.messages...)
}

func (f *fakeStore) Resolve(_ context.Context, address string) (state.Resolution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	addr, err := state.NormalizeAddress(address)
	if err != nil {
		return state.Resolution{}, replication.ErrInvalidAddress
	}
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	if !f.domains[domain] {
		return state.Resolution{}, replication.ErrNoSuchDomain
	}
	var res state.Resolution
	add := func(a string) bool {
		d := a[strings.LastIndexByte(a, '@')+1:]
		if !f.domains[d] {
			res.External = append(res.External, a)
			return true
		}
		if _, ok := f.accounts[a]; ok {
			res.Accounts = append(res.Accounts, a)
			return true
		}
		return false
	}
	if add(addr) {
		return res, nil
	}
	if targets, ok := f.aliases[addr]; ok {
		for _, t := range targets {
			add(t)
		}
		return res, nil
	}
	local := addr[:strings.LastIndexByte(addr, '@')]
	if i := strings.IndexByte(local, '+'); i > 0 && add(local[:i]+"@"+domain) {
		return res, nil
	}
	return state.Resolution{}, replication.ErrNoSuchAccount
}

func (f *fakeStore) IsLocalDomain(_ context.Context, domain string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.domains[strings.ToLower(domain)]
}

func (f *fakeStore) Account(_ context.Context, address string) (state.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[strings.ToLower(address)]
	if !ok {
		return state.Account{}, replication.ErrNoSuchAccount
	}
	return *a, nil
}

func (f *fakeStore) AddressingBarrier(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.barrierErr
}

func (f *fakeStore) Barrier(ctx context.Context) error { return f.AddressingBarrier(ctx) }

func (f *fakeStore) MailboxByID(context.Context, string, uint64) (state.Mailbox, error) {
	return state.Mailbox{}, replication.ErrNoSuchMailbox
}

func (f *fakeStore) authenticate(_ context.Context, username, password string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	addr := strings.ToLower(username)
	if p, ok := f.passwords[addr]; ok && p == password && !f.accounts[addr].Disabled {
		return addr, nil
	}
	return "", replication.ErrAuthFailed
}

func (f *fakeStore) OwnsSender(ctx context.Context, account, address string) (bool, error) {
	addr, err := state.NormalizeAddress(address)
	if err != nil {
		return false, nil
	}
	if addr == account {
		return true, nil
	}
	if local, domain, _ := strings.Cut(addr, "@"); strings.Contains(local, "+") && local[:strings.IndexByte(local, '+')]+"@"+domain == account {
		return true, nil
	}
	f.mu.Lock()
	targets, isAlias := f.aliases[addr]
	f.mu.Unlock()
	return isAlias && slices.Contains(targets, account), nil
}

func (f *fakeStore) Ingest(ctx context.Context, body io.Reader, maxSize int64) (replication.Ingested, error) {
	data, err := io.ReadAll(io.LimitReader(body, maxSize+1))
	if err != nil {
		return replication.Ingested{}, fmt.Errorf("blob: put: reading body: %w", err)
	}
	if int64(len(data)) > maxSize {
		return replication.Ingested{}, replication.ErrTooLarge
	}
	id := state.BlobID(sha256.Sum256(data))
	f.mu.Lock()
	if f.bodies == nil {
		f.bodies = map[state.BlobID][]byte{}
	}
	f.bodies[id] = data
	f.mu.Unlock()
	return replication.Ingested{Blob: id, Size: int64(len(data))}, nil
}

func (f *fakeStore) CommitDeliveryQueued(ctx context.Context, b replication.Ingested, rcpts []replication.Recipient, remote []state.QueueTarget, date time.Time) (replication.Delivered, error) {
	f.mu.Lock()
	f.queued = append(f.queued, remote...)
	f.mu.Unlock()
	return f.CommitDelivery(ctx, b, rcpts, date)
}

func (f *fakeStore) CommitDelivery(ctx context.Context, b replication.Ingested, rcpts []replication.Recipient, _ time.Time) (replication.Delivered, error) {
	f.mu.Lock()
	afterRead, hang, gate := f.afterRead, f.hang, f.gate
	data := f.bodies[b.Blob]
	f.mu.Unlock()
	if afterRead != nil {
		afterRead()
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return replication.Delivered{}, fmt.Errorf("propose: %w: %w", replication.ErrOutcomeUnknown, ctx.Err())
		}
	}
	if hang {
		<-ctx.Done()
		return replication.Delivered{}, fmt.Errorf("propose: %w", ctx.Err())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deliverErr != nil {
		return replication.Delivered{}, f.deliverErr
	}
	d := replication.Delivered{Blob: b.Blob, Size: int64(len(data)), Results: make([]state.TargetResult, len(rcpts))}
	var got []string
	for i, r := range rcpts {
		a, ok := f.accounts[r.Account]
		switch {
		case !ok:
			d.Results[i].Code = state.CodeNoSuchAccount
		case a.QuotaBytes > 0 && a.UsedBytes+int64(len(data)) > a.QuotaBytes:
			d.Results[i].Code = state.CodeQuotaExceeded
		default:
			a.UsedBytes += int64(len(data))
			a.UsedMessages++
			got = append(got, r.Account)
		}
	}
	if len(got) > 0 {
		f.messages = append(f.messages, fakeMessage{Body: data, Accounts: got})
	}
	return d, nil
}

func (f *fakeStore) CommitAppend(context.Context, string, uint64, replication.Ingested, []string, time.Time) (state.AppendResult, error) {
	return state.AppendResult{}, replication.ErrNoSuchMailbox
}

func (f *fakeStore) maxMessageSize() int64 { return f.maxSize }

// ---- TLS -----------------------------------------------------------------

func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c, err := localcert.New(24 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.ServerConfig(), c.ClientConfig()
}

// ---- a server on loopback ------------------------------------------------

type testServer struct {
	srv       *Server
	store     *fakeStore
	clientTLS *tls.Config
	addr      map[mode]string
}

type serverOpts struct {
	options Options
	// remote, if set, is the client address the server sees (to test what
	// a non-loopback client may do).
	remote string
	// checks, if set, gives the checks the delivery pipeline runs before
	// the commit.
	checks func(*fakeStore) []delivery.Check
	// outbound gives the pipeline an outbound queue (outside recipients
	// of submissions are queued; without it they are refused).
	outbound bool
}

func (so serverOpts) outboundConfig() *delivery.Outbound {
	if !so.outbound {
		return nil
	}
	return &delivery.Outbound{Expiry: time.Hour}
}

func startServer(t *testing.T, so serverOpts) *testServer {
	t.Helper()
	store := newFakeStore()
	serverTLS, clientTLS := testTLS(t)
	var checks []delivery.Check
	if so.checks != nil {
		checks = so.checks(store)
	}
	srv, err := newServer(Config{
		Hostname: "mx.test",
		TLS:      serverTLS,
		Limiter:  auth.NewLimiter(auth.LimiterOptions{FailDelay: time.Millisecond, IPFailures: 3}),
		Options:  so.options,
		Pipeline: delivery.New(delivery.Config{Store: store, Checks: checks, Outbound: so.outboundConfig()}),
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, store: store, clientTLS: clientTLS, addr: map[mode]string{}}
	var wg sync.WaitGroup
	for _, md := range []mode{modeMX, modeSubmission, modeSubmissions} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ts.addr[md] = ln.Addr().String()
		var l net.Listener = ln
		if so.remote != "" {
			l = remoteListener{Listener: ln, remote: so.remote}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch md {
			case modeMX:
				err = srv.ServeMX(l)
			case modeSubmission:
				err = srv.ServeSubmission(l)
			default:
				err = srv.ServeSubmissions(l)
			}
			if err != nil && !errors.Is(err, net.ErrClosed) {
				t.Errorf("serve %s: %v", md, err)
			}
		}()
	}
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
	return ts
}

// remoteListener makes accepted connections report another client address.
type remoteListener struct {
	net.Listener
	remote string
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{Conn: c, remote: l.remote}, nil
}

type remoteConn struct {
	net.Conn
	remote string
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

func (c remoteConn) RemoteAddr() net.Addr { return fakeAddr(c.remote) }

// ---- a raw client, for what go-smtp's client will not send ---------------

type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220")
	return c
}

// startTLS upgrades the connection (after a 220 to STARTTLS).
func (c *rawClient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.send("STARTTLS\r\n")
	c.expect("220")
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// reply reads one (possibly multi-line) reply and returns it whole.
func (c *rawClient) reply() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var all strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			return all.String(), err
		}
		if len(line) < 4 || line[3] != '-' {
			return all.String(), nil
		}
	}
}

// expect reads a reply and fails unless it starts with prefix.
func (c *rawClient) expect(prefix string) string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading reply (want %s): %v (got %q)", prefix, err, r)
	}
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("reply %q, want %s", strings.TrimSpace(r), prefix)
	}
	return r
}

// cmd sends a command line and expects a reply starting with prefix.
func (c *rawClient) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(prefix)
}

// closed reports whether the server closed the connection (after any
// replies still in flight).
func (c *rawClient) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, err := c.r.ReadString('\n'); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// waitFor polls cond until it holds or fails the test after 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
