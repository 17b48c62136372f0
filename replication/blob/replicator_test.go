package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// testCluster runs N in-process nodes, each a Store, a Server on loopback
// TCP, a Client and a Replicator, with a shared fake membership and a shared
// fake reference set (what the replicated FSM would say).
type testCluster struct {
	t     *testing.T
	ropts ReplicatorOptions
	sopts Options
	run   bool // start Replicator.Run on each node

	mu      sync.Mutex
	members []Member
	down    map[string]bool
	refs    map[ID]bool

	nodes []*testNode
}

type testNode struct {
	c     *testCluster
	index int
	dir   string

	store  *Store
	link   *tcpLink
	client *Client
	repl   *Replicator

	stopServe context.CancelFunc
	serveDone chan error
	stopRun   context.CancelFunc
	runDone   chan error
}

func newTestCluster(t *testing.T, n int, sopts Options, ropts ReplicatorOptions, run bool) *testCluster {
	c := &testCluster{t: t, sopts: sopts, ropts: ropts, run: run, down: map[string]bool{}, refs: map[ID]bool{}}
	for i := 0; i < n; i++ {
		c.members = append(c.members, Member{ID: fmt.Sprintf("n%d", i), Zone: fmt.Sprintf("z%d", i%3)})
		c.nodes = append(c.nodes, &testNode{c: c, index: i, dir: t.TempDir()})
	}
	for _, nd := range c.nodes {
		nd.start()
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.stop()
		}
	})
	return c
}

func (n *testNode) start() {
	t := n.c.t
	t.Helper()
	s, err := Open(n.dir, n.c.sopts)
	if err != nil {
		t.Fatal(err)
	}
	n.store = s
	n.link = newTCPLink(t)
	n.c.mu.Lock()
	n.c.members[n.index].Addr = n.link.Addr().String()
	n.c.mu.Unlock()
	n.client = NewClient(s, n.link)
	n.repl = NewReplicator(s, n.client, nodeView{n}, clusterRefs{n.c}, n.c.ropts)
	srv := NewServer(s, n.link, nil)
	ctx, cancel := context.WithCancel(context.Background())
	n.stopServe, n.serveDone = cancel, make(chan error, 1)
	go func() { n.serveDone <- srv.Serve(ctx) }()
	if n.c.run {
		rctx, rcancel := context.WithCancel(context.Background())
		n.stopRun, n.runDone = rcancel, make(chan error, 1)
		go func() { n.runDone <- n.repl.Run(rctx) }()
	}
}

func (n *testNode) stop() {
	if n.store == nil {
		return
	}
	if n.stopRun != nil {
		n.stopRun()
		<-n.runDone
		n.stopRun = nil
	}
	n.repl.Close()
	n.stopServe()
	<-n.serveDone
	_ = n.client.Close()
	_ = n.store.Close()
	n.store = nil
}

// wipe is a lost disk: stop, delete the whole folder, start empty.
func (n *testNode) wipe() {
	n.stop()
	if err := os.RemoveAll(n.dir); err != nil {
		n.c.t.Fatal(err)
	}
	n.start()
}

func (c *testCluster) setDown(i int, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[c.members[i].ID] = down
}

func (c *testCluster) reference(id ID, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.refs[id] = true
	} else {
		delete(c.refs, id)
	}
}

func (c *testCluster) placement(id ID) []int {
	c.mu.Lock()
	ms := slices.Clone(c.members)
	c.mu.Unlock()
	var out []int
	for _, m := range Placement(id, ms, c.ropts.Replicas) {
		out = append(out, slices.IndexFunc(ms, func(x Member) bool { return x.ID == m.ID }))
	}
	return out
}

func (c *testCluster) holders(id ID) int {
	n := 0
	for _, nd := range c.nodes {
		if nd.store != nil && nd.store.Has(id) {
			n++
		}
	}
	return n
}

// fullyPlaced reports whether every placement member holds a healthy-looking copy.
func (c *testCluster) fullyPlaced(id ID) bool {
	for _, i := range c.placement(id) {
		if !c.nodes[i].store.Has(id) {
			return false
		}
	}
	return true
}

// nodeView is one node's Membership.
type nodeView struct{ n *testNode }

func (v nodeView) Self() Member {
	v.n.c.mu.Lock()
	defer v.n.c.mu.Unlock()
	return v.n.c.members[v.n.index]
}

func (v nodeView) LiveMembers() []Member {
	c := v.n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Member
	for _, m := range c.members {
		if !c.down[m.ID] {
			out = append(out, m)
		}
	}
	return out
}

// clusterRefs is the replicated reference set every node sees.
type clusterRefs struct{ c *testCluster }

func (r clusterRefs) ForEachReferenced(ctx context.Context, fn func(ID) error) error {
	r.c.mu.Lock()
	ids := make([]ID, 0, len(r.c.refs))
	for id := range r.c.refs {
		ids = append(ids, id)
	}
	r.c.mu.Unlock()
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

func (r clusterRefs) IsReferenced(id ID) bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.c.refs[id]
}

// deliver does what a delivery does: Put locally, Replicate, then reference.
func (c *testCluster) deliver(on int, raw []byte) (ID, error) {
	nd := c.nodes[on]
	id, _, err := nd.store.Put(context.Background(), bytes.NewReader(raw), 0)
	if err != nil {
		return id, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nd.repl.Replicate(ctx, id); err != nil {
		return id, err
	}
	c.reference(id, true)
	return id, nil
}

func TestReplicateAcksAtWAndReachesR(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 3}, false)
	var all []ID
	for i := 0; i < 10; i++ {
		id, err := c.deliver(i%3, body(uint64(i), 4000))
		if err != nil {
			t.Fatal(err)
		}
		if h := c.holders(id); h < 2 {
			t.Fatalf("Replicate returned with %d copies, want at least W=2", h)
		}
		all = append(all, id)
	}
	eventually(t, "every blob on all R=3 nodes", func() bool {
		for _, id := range all {
			if c.holders(id) != 3 {
				return false
			}
		}
		return true
	})
}

// The writer need not be in the placement: its copy counts, the placement
// members get theirs.
func TestReplicateFromNodeOutsidePlacement(t *testing.T) {
	c := newTestCluster(t, 5, Options{}, ReplicatorOptions{Replicas: 3}, false)
	for i := 0; i < 8; i++ {
		raw := body(uint64(1000+i), 3000)
		id := Sum(raw)
		if slices.Contains(c.placement(id), 0) {
			continue
		}
		if _, err := c.deliver(0, raw); err != nil {
			t.Fatal(err)
		}
		eventually(t, "placement members hold the blob", func() bool { return c.fullyPlaced(id) })
		if !c.nodes[0].store.Has(id) {
			t.Fatal("the writer's own copy disappeared")
		}
	}
}

func TestReplicateFailsWithoutWCopies(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 3}, false)
	// Membership still believes both peers alive (gossip lags), but they are gone.
	c.nodes[1].stop()
	c.nodes[2].stop()
	raw := []byte("nobody else will take this")
	id, _, err := c.nodes[0].store.Put(context.Background(), bytes.NewReader(raw), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.nodes[0].repl.Replicate(ctx, id); !errors.Is(err, ErrNotEnoughReplicas) {
		t.Fatalf("Replicate with both peers down: %v, want ErrNotEnoughReplicas", err)
	}
	// One peer back is enough for W=2.
	c.nodes[1].start()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := c.nodes[0].repl.Replicate(ctx2, id); err != nil {
		t.Fatalf("Replicate with one peer up: %v", err)
	}
	if !c.nodes[1].store.Has(id) {
		t.Fatal("acknowledged without the second copy")
	}
}

// When placement members are unreachable, another live node takes a copy so
// the ack still has W distinct copies behind it.
func TestReplicateFallsBackToSpareNode(t *testing.T) {
	c := newTestCluster(t, 4, Options{}, ReplicatorOptions{Replicas: 3}, false)
	var raw []byte
	var pl []int
	for i := 0; ; i++ {
		raw = body(uint64(2000+i), 2000)
		pl = c.placement(Sum(raw))
		if slices.Contains(pl, 0) {
			break
		}
	}
	spare := -1
	for i := 1; i < 4; i++ {
		if !slices.Contains(pl, i) {
			spare = i
		} else {
			c.nodes[i].stop()
		}
	}
	id, err := c.deliver(0, raw)
	if err != nil {
		t.Fatalf("Replicate with a spare available: %v", err)
	}
	if !c.nodes[spare].store.Has(id) {
		t.Fatal("the spare node holds no copy")
	}
}

func TestRepairRestoresWipedNode(t *testing.T) {
	c := newTestCluster(t, 4, Options{}, ReplicatorOptions{
		Replicas:       3,
		RepairInterval: 50 * time.Millisecond,
		ScrubInterval:  time.Hour,
		GCInterval:     time.Hour,
	}, true)
	var all []ID
	raws := map[ID][]byte{}
	for i := 0; i < 40; i++ {
		raw := body(uint64(3000+i), 1000+i*100)
		id, err := c.deliver(i%4, raw)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, id)
		raws[id] = raw
	}
	allPlaced := func() bool {
		for _, id := range all {
			if !c.fullyPlaced(id) {
				return false
			}
		}
		return true
	}
	eventually(t, "initial replication complete", allPlaced)

	victim := c.nodes[1]
	// The copies repair must bring back: those of the victim's placement.
	// (It may also hold a body it took in but that is placed elsewhere,
	// until that copy is dropped; repair rightly never restores that one.)
	held := 0
	for _, id := range all {
		if victim.store.Has(id) && slices.Contains(c.placement(id), 1) {
			held++
		}
	}
	victim.wipe()
	eventually(t, "every blob back on all its placement members", allPlaced)
	for _, id := range all {
		if slices.Contains(c.placement(id), 1) {
			if got := readAll(t, victim.store, id); !bytes.Equal(got, raws[id]) {
				t.Fatal("repaired copy differs")
			}
		}
	}
	if st := victim.repl.Stats(); st.Repaired < int64(held) {
		t.Errorf("Repaired = %d, want at least the %d placement copies lost", st.Repaired, held)
	}
	eventually(t, "no blob reported under-replicated", func() bool {
		var sum int64
		for _, nd := range c.nodes {
			sum += nd.repl.Stats().UnderReplicated
		}
		return sum == 0
	})
}

func readAllBody(t *testing.T, r *Replicator, id ID) []byte {
	t.Helper()
	b, err := r.Open(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestUnderReplicatedIsReportedAndHealed(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{
		Replicas:       3,
		RepairInterval: 50 * time.Millisecond,
		ScrubInterval:  time.Hour,
		GCInterval:     time.Hour,
	}, true)
	c.nodes[2].stop()
	c.setDown(2, true)
	const n = 12
	for i := 0; i < n; i++ {
		if _, err := c.deliver(i%2, body(uint64(4000+i), 500)); err != nil {
			t.Fatal(err)
		}
	}
	sumUnder := func() (sum int64) {
		for _, nd := range c.nodes[:2] {
			sum += nd.repl.Stats().UnderReplicated
		}
		return sum
	}
	eventually(t, "all blobs reported under-replicated while a node is down", func() bool { return sumUnder() == n })
	c.nodes[2].start()
	c.setDown(2, false)
	eventually(t, "node 2 catches up and nothing is under-replicated", func() bool {
		return c.nodes[2].repl.Stats().UnderReplicated+sumUnder() == 0 && c.nodes[2].repl.Stats().Repaired == n
	})
}

func TestScrubReplacesCorruptCopy(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{
		Replicas:       3,
		RepairInterval: time.Hour, // only scrub may fix it
		ScrubInterval:  20 * time.Millisecond,
		GCInterval:     time.Hour,
	}, true)
	raw := body(5000, 30000)
	id, err := c.deliver(0, raw)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "replicated", func() bool { return c.holders(id) == 3 })
	victim := c.nodes[2]
	flipByte(t, victim.store, id, 500)
	eventually(t, "scrub found the corruption and re-fetched", func() bool {
		st := victim.repl.Stats()
		return st.CorruptFound >= 1 && st.Repaired >= 1
	})
	if err := victim.store.Verify(context.Background(), id); err != nil {
		t.Fatalf("copy after scrub: %v", err)
	}
	if got := readAll(t, victim.store, id); !bytes.Equal(got, raw) {
		t.Fatal("repaired content differs")
	}
}

func TestGCDeletesOnlyOldUnreferenced(t *testing.T) {
	c := newTestCluster(t, 1, Options{GCGrace: time.Hour}, ReplicatorOptions{
		Replicas:       1,
		RepairInterval: time.Hour,
		ScrubInterval:  time.Hour,
		GCInterval:     20 * time.Millisecond,
	}, false)
	nd := c.nodes[0]
	oldUnref := mustPut(t, nd.store, []byte("old and unreferenced"))
	freshUnref := mustPut(t, nd.store, []byte("fresh and unreferenced: an in-flight delivery"))
	oldRef, err := c.deliver(0, []byte("old but referenced"))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, id := range []ID{oldUnref, oldRef} {
		if err := os.Chtimes(nd.store.path(id), old, old); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nd.repl.Run(ctx) }()
	// The pass that deletes it also judges the other two.
	eventually(t, "old unreferenced blob collected", func() bool { return !nd.store.Has(oldUnref) && nd.repl.Stats().Held == 2 })
	cancel()
	<-done
	if !nd.store.Has(freshUnref) {
		t.Error("fresh unreferenced blob deleted inside the grace period")
	}
	if !nd.store.Has(oldRef) {
		t.Error("referenced blob deleted")
	}
	if st := nd.repl.Stats(); st.Deleted != 1 || st.Held != 2 {
		t.Errorf("stats: %+v", st)
	}
	// A blob that stops being referenced and is past grace goes too.
	c.reference(oldRef, false)
	if err := nd.repl.CollectGarbage(context.Background()); err != nil {
		t.Fatal(err)
	}
	if nd.store.Has(oldRef) {
		t.Error("old blob kept after its last reference went away")
	}
}

func TestReplicatorOpenFetchesOnDemand(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 1}, false)
	raw := body(6000, 7000)
	var id ID
	// Find a body whose single placement member is not node 0.
	for i := 0; ; i++ {
		raw = body(uint64(6000+i), 7000)
		id = Sum(raw)
		if c.placement(id)[0] != 0 {
			break
		}
	}
	owner := c.nodes[c.placement(id)[0]]
	mustPut(t, owner.store, raw)
	if got := readAllBody(t, c.nodes[0].repl, id); !bytes.Equal(got, raw) {
		t.Fatal("content fetched on demand differs")
	}
	if !c.nodes[0].store.Has(id) {
		t.Error("the fetched copy was not kept")
	}
	missing := Sum([]byte("nowhere"))
	if _, err := c.nodes[0].repl.Open(context.Background(), missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a blob nobody has: %v", err)
	}
}

func TestReplicatorPutIsDurableLocallyAndOnW(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 3}, false)
	nd := c.nodes[0]
	raw := body(7000, 6000)
	gate := make(chan struct{})
	var once sync.Once
	nd.store.beforeFlush = func(int) { once.Do(func() { <-gate }) }
	done := make(chan error, 1)
	go func() {
		_, _, err := nd.repl.Put(context.Background(), bytes.NewReader(raw), 0)
		done <- err
	}()
	// The peers get their copies while the local flush is still held back...
	eventually(t, "both peers hold a copy", func() bool {
		return c.nodes[1].store.Has(Sum(raw)) && c.nodes[2].store.Has(Sum(raw))
	})
	// ...but the Put is not acknowledged before the local copy is durable.
	select {
	case err := <-done:
		t.Fatalf("Put returned (%v) before the local flush", err)
	default:
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, nd.store, Sum(raw)); !bytes.Equal(got, raw) {
		t.Fatal("local content differs")
	}

	c.nodes[1].stop()
	c.nodes[2].stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, _, err := nd.repl.Put(ctx, bytes.NewReader([]byte("alone")), 0); !errors.Is(err, ErrNotEnoughReplicas) {
		t.Fatalf("Put with both peers down: %v, want ErrNotEnoughReplicas", err)
	}
}

// A member that missed a push while it was unreachable (but still counted
// live, as after a short network cut) gets the copy from the pusher once it
// answers again, without a repair pass of its own.
func TestFailedPushIsHandedOffWhenTheMemberReturns(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 3, PushTimeout: 2 * time.Second}, false)
	c.nodes[2].stop() // unreachable, yet still in everyone's live list
	id, err := c.deliver(0, body(9100, 700))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the push to node 2 to fail", func() bool { return c.nodes[0].repl.Stats().PushFailures > 0 })
	c.nodes[2].start()
	if c.nodes[2].store.Has(id) {
		t.Fatal("node 2 has the copy before any retry")
	}
	c.nodes[0].repl.retryHandoffs(context.Background())
	if !c.nodes[2].store.Has(id) {
		t.Fatal("the handed-off copy did not reach node 2")
	}
	if got := c.nodes[2].repl.Stats().Repaired; got != 0 {
		t.Fatalf("node 2 repaired %d copies itself; the copy should have come from the handoff", got)
	}
	c.nodes[0].repl.handoffMu.Lock()
	left := c.nodes[0].repl.handoffN
	c.nodes[0].repl.handoffMu.Unlock()
	if left != 0 {
		t.Fatalf("%d handed-off copies left after a successful retry", left)
	}
}

// A node that starts with bodies on disk reports how many it holds as soon
// as it has counted them, not only after its first GC or scrub pass.
func TestHeldCountedAtStart(t *testing.T) {
	c := newTestCluster(t, 1, Options{}, ReplicatorOptions{
		Replicas:       1,
		RepairInterval: time.Hour,
		ScrubInterval:  time.Hour,
		GCInterval:     time.Hour,
	}, true)
	nd := c.nodes[0]
	for i := range 5 {
		mustPut(t, nd.store, []byte(fmt.Sprintf("body %d", i)))
	}
	nd.stop()
	nd.start()
	eventually(t, "the held count after a restart", func() bool {
		st := nd.repl.Stats()
		return !st.HeldAt.IsZero() && st.Held == 5
	})
}

// knownView adds KnownMembers to a node's view: every member of the test
// cluster, live or not (as node/ answers from the Raft configuration).
type knownView struct{ nodeView }

func (v knownView) KnownMembers() []Member {
	v.n.c.mu.Lock()
	defer v.n.c.mu.Unlock()
	return slices.Clone(v.n.c.members)
}

// A body stored while gossip still calls a member dead (a partition just
// healed) is handed off to it, though no push to it failed: it reaches the
// member once gossip sees it again, without waiting for the periodic
// repair.
func TestBodyStoredWhileAMemberLooksDeadIsHandedOff(t *testing.T) {
	c := newTestCluster(t, 3, Options{}, ReplicatorOptions{Replicas: 3, PushTimeout: 2 * time.Second}, false)
	writer := c.nodes[0]
	writer.repl.members = knownView{nodeView{writer}}
	c.setDown(2, true) // running, but not live in anyone's gossip view
	id, err := c.deliver(0, body(9200, 900))
	if err != nil {
		t.Fatal(err)
	}
	if c.nodes[2].store.Has(id) {
		t.Fatal("the member that looked dead got the copy at once")
	}
	writer.repl.retryHandoffs(context.Background())
	if c.nodes[2].store.Has(id) {
		t.Fatal("a handoff went to a member gossip does not show live")
	}
	c.setDown(2, false)
	writer.repl.retryHandoffs(context.Background())
	if !c.nodes[2].store.Has(id) {
		t.Fatal("the body did not reach the member once it was live again")
	}
}
