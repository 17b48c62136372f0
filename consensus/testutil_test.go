package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// --- a plain TCP Link with a channel byte and a cut switch -----------------

// testNet is a set of loopback listeners, one per node, with links that a
// test can cut. It stands in for clusternet (which consensus must not import).
type testNet struct {
	mu   sync.Mutex
	cut  map[[2]string]bool // node pair -> cut
	book map[string]string  // listener address -> node ID
}

func (tn *testNet) register(addr, id string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	tn.book[addr] = id
}

func (tn *testNet) isCut(a, b string) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.cut[[2]string{a, b}] || tn.cut[[2]string{b, a}]
}

func (tn *testNet) partition(group []string, others []string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for _, a := range group {
		for _, b := range others {
			tn.cut[[2]string{a, b}] = true
		}
	}
}

func (tn *testNet) heal() {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	tn.cut = make(map[[2]string]bool)
}

type testMux struct {
	tn    *testNet
	id    string
	ln    net.Listener
	links map[byte]*testLink
}

func newTestMux(t testing.TB, tn *testNet, id, addr string) *testMux {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &testMux{tn: tn, id: id, ln: ln, links: map[byte]*testLink{}}
	for _, ch := range []byte{'R', 'F'} {
		m.links[ch] = &testLink{mux: m, ch: ch, conns: make(chan net.Conn, 16), done: make(chan struct{})}
	}
	go m.serve()
	return m
}

func (m *testMux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var hdr [2]byte
			if _, err := io.ReadFull(c, hdr[:1]); err != nil {
				_ = c.Close()
				return
			}
			var n [1]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				_ = c.Close()
				return
			}
			peer := make([]byte, n[0])
			if _, err := io.ReadFull(c, peer); err != nil {
				_ = c.Close()
				return
			}
			l := m.links[hdr[0]]
			pc := &cutConn{Conn: c, tn: m.tn, a: m.id, b: string(peer)}
			if l == nil || m.tn.isCut(m.id, string(peer)) {
				_ = c.Close()
				return
			}
			select {
			case l.conns <- pc:
			case <-l.done:
				_ = c.Close()
			}
		}()
	}
}

type testLink struct {
	mux   *testMux
	ch    byte
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *testLink) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *testLink) Close() error {
	l.once.Do(func() { close(l.done) })
	if l.ch == 'R' {
		return l.mux.ln.Close()
	}
	return nil
}
func (l *testLink) Addr() net.Addr { return l.mux.ln.Addr() }
func (l *testLink) Dial(ctx context.Context, addr string) (net.Conn, error) {
	peer := l.mux.peerAt(addr)
	if l.mux.tn.isCut(l.mux.id, peer) {
		return nil, errors.New("link cut")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	hdr := append([]byte{l.ch, byte(len(l.mux.id))}, l.mux.id...)
	if _, err := c.Write(hdr); err != nil {
		_ = c.Close()
		return nil, err
	}
	return &cutConn{Conn: c, tn: l.mux.tn, a: l.mux.id, b: peer}, nil
}

// peerAt finds which node listens on addr.
func (m *testMux) peerAt(addr string) string {
	m.tn.mu.Lock()
	defer m.tn.mu.Unlock()
	return m.tn.book[addr]
}

type cutConn struct {
	net.Conn
	tn   *testNet
	a, b string
}

func (c *cutConn) Read(p []byte) (int, error) {
	if c.tn.isCut(c.a, c.b) {
		_ = c.Conn.Close()
		return 0, errors.New("link cut")
	}
	return c.Conn.Read(p)
}
func (c *cutConn) Write(p []byte) (int, error) {
	if c.tn.isCut(c.a, c.b) {
		_ = c.Conn.Close()
		return 0, errors.New("link cut")
	}
	return c.Conn.Write(p)
}

// --- a persistent key/value state machine honouring the contract ----------

type kvCommand struct {
	Op    string // "set" or "incr"
	Key   string
	Value string
}

var (
	bucketData  = []byte("data")
	bucketMeta  = []byte("meta")
	bucketSeen  = []byte("seen")
	keyApplied  = []byte("applied")
	keyRestores = []byte("restores")
)

type kvFSM struct {
	path     string
	mu       sync.RWMutex
	db       *bolt.DB
	applies  atomic.Int64 // state changes made by this process
	restores atomic.Int64
}

func openKV(t testing.TB, path string) *kvFSM {
	t.Helper()
	f := &kvFSM{path: path}
	if err := f.open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.close() })
	return f
}

func (f *kvFSM) open() error {
	db, err := bolt.Open(f.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketData, bucketMeta, bucketSeen} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	f.db = db
	return err
}

func (f *kvFSM) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	return err
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func putU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func (f *kvFSM) Apply(entries []Entry) ([][]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([][]byte, len(entries))
	err := f.db.Update(func(tx *bolt.Tx) error {
		meta, data, seen := tx.Bucket(bucketMeta), tx.Bucket(bucketData), tx.Bucket(bucketSeen)
		applied := u64(meta.Get(keyApplied))
		for i, e := range entries {
			if e.Index <= applied {
				continue
			}
			if prev := seen.Get(e.ID[:]); prev != nil {
				out[i] = append([]byte(nil), prev...)
				continue
			}
			var cmd kvCommand
			if err := json.Unmarshal(e.Data, &cmd); err != nil {
				return fmt.Errorf("bad command at %d: %w", e.Index, err)
			}
			var res []byte
			switch cmd.Op {
			case "set":
				res = []byte(cmd.Value)
				if err := data.Put([]byte(cmd.Key), res); err != nil {
					return err
				}
			case "incr":
				n := u64(data.Get([]byte(cmd.Key))) + 1
				res = putU64(n)
				if err := data.Put([]byte(cmd.Key), res); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unknown op %q", cmd.Op)
			}
			f.applies.Add(1)
			if err := seen.Put(e.ID[:], res); err != nil {
				return err
			}
			out[i] = res
		}
		return meta.Put(keyApplied, putU64(max(applied, entries[len(entries)-1].Index)))
	})
	return out, err
}

func (f *kvFSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var idx uint64
	_ = f.db.View(func(tx *bolt.Tx) error {
		idx = u64(tx.Bucket(bucketMeta).Get(keyApplied))
		return nil
	})
	return idx
}

func (f *kvFSM) get(key string) []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var v []byte
	_ = f.db.View(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketData).Get([]byte(key))...)
		return nil
	})
	return v
}

type kvSnapshot struct {
	tx *bolt.Tx
}

func (s *kvSnapshot) WriteTo(w io.Writer) (int64, error) { return s.tx.WriteTo(w) }
func (s *kvSnapshot) Release()                           { _ = s.tx.Rollback() }

func (f *kvFSM) Snapshot() (Snapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &kvSnapshot{tx: tx}, nil
}

func (f *kvFSM) Restore(r io.Reader) error {
	tmp := f.path + ".restore"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	_ = out.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return err
	}
	f.restores.Add(1)
	return f.open()
}

// --- the in-process cluster ------------------------------------------------

func testTiming() Timing {
	return Timing{
		HeartbeatTimeout:   150 * time.Millisecond,
		ElectionTimeout:    150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	}
}

type testNode struct {
	id   string
	addr string
	dir  string
	mux  *testMux
	fsm  *kvFSM
	node *Node
}

type testCluster struct {
	t     testing.TB
	tn    *testNet
	nodes []*testNode
	tweak func(*Config)
}

func newTestCluster(t testing.TB, n int, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, tn: &testNet{cut: map[[2]string]bool{}, book: map[string]string{}}, tweak: tweak}
	for i := range n {
		tnode := &testNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir()}
		c.nodes = append(c.nodes, tnode)
		c.start(i, "127.0.0.1:0")
	}
	var servers []Server
	for _, tnode := range c.nodes {
		servers = append(servers, Server{ID: tnode.id, Address: tnode.addr, Voter: true})
	}
	for _, tnode := range c.nodes {
		if err := tnode.node.Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

func (c *testCluster) start(i int, addr string) {
	tnode := c.nodes[i]
	tnode.mux = newTestMux(c.t, c.tn, tnode.id, addr)
	tnode.addr = tnode.mux.ln.Addr().String()
	c.tn.register(tnode.addr, tnode.id)
	tnode.fsm = openKV(c.t, filepath.Join(tnode.dir, "kv.db"))
	cfg := Config{
		NodeID:            tnode.id,
		Advertise:         tnode.addr,
		Dir:               filepath.Join(tnode.dir, "raft"),
		RaftLink:          tnode.mux.links['R'],
		RPCLink:           tnode.mux.links['F'],
		StateMachine:      tnode.fsm,
		Timing:            testTiming(),
		ProposeTimeout:    3 * time.Second,
		SnapshotThreshold: 1 << 20,
		SnapshotInterval:  time.Hour,
		Logger:            slog.New(slog.DiscardHandler),
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	tnode.node = n
}

func (c *testCluster) stop(i int) {
	tnode := c.nodes[i]
	if tnode.node == nil {
		return
	}
	_ = tnode.node.Shutdown()
	_ = tnode.mux.ln.Close()
	_ = tnode.fsm.close()
	tnode.node = nil
}

func (c *testCluster) restart(i int) {
	c.start(i, c.nodes[i].addr)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *testCluster) leader() int {
	c.t.Helper()
	idx := -1
	waitFor(c.t, "a leader", 10*time.Second, func() bool {
		for i, tnode := range c.nodes {
			if tnode.node != nil && tnode.node.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

func (c *testCluster) follower() int {
	l := c.leader()
	for i, tnode := range c.nodes {
		if i != l && tnode.node != nil {
			return i
		}
	}
	c.t.Fatal("no live follower")
	return -1
}

func set(t *testing.T, n *Node, key, value string) Result {
	t.Helper()
	data, _ := json.Marshal(kvCommand{Op: "set", Key: key, Value: value})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, data)
	if err != nil {
		t.Fatalf("propose %s=%s: %v", key, value, err)
	}
	if !bytes.Equal(res.Data, []byte(value)) {
		t.Fatalf("result %q, want %q", res.Data, value)
	}
	return res
}
