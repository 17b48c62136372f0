package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/simnet"
)

// Options shapes a test cluster.
type Options struct {
	Nodes int // default 3
	// Configure adjusts node i's configuration before each start.
	Configure func(i int, cfg *node.Config)
	// Logger receives every node's log; default: discarded unless
	// MAILCLUSTER_TEST_LOG=1.
	Logger *slog.Logger
}

// Member is one node slot: its configuration survives Kill and Restart.
type Member struct {
	ID      string
	Dir     string
	Node    *node.Node // nil while killed
	cfg     node.Config
	started bool // ports are pinned from the first start on
}

// Cluster is a running set of in-process nodes.
type Cluster struct {
	t       testing.TB
	opts    Options
	secret  []byte
	dir     string // parent of every member's data folder
	ports   *ports
	links   *links
	tls     testTLS
	dns     *simnet.DNS
	sink    *simnet.Sink
	Members []*Member
}

// DNS is the loopback DNS server every node resolves through (its
// dns_servers). Its wildcard answers every domain with an MX at the sink
// (simnet.DefaultSinkHost, A 127.0.0.1); tests add records with Set.
func (c *Cluster) DNS() *simnet.DNS { return c.dns }

// Sink is the loopback SMTP server that stands in for every remote MX:
// each node's smtp_remote_port is its port. It offers STARTTLS with the
// cluster's test certificate.
func (c *Cluster) Sink() *simnet.Sink { return c.sink }

// ClientTLS returns a TLS client config that trusts the cluster's test
// certificate (server name "localhost").
func (c *Cluster) ClientTLS() *tls.Config { return c.tls.client.Clone() }

// Timeout bounds every wait in the harness.
const Timeout = 30 * time.Second

// RetryWindow bounds how long a step is tried again across elections
// (Retry and the helpers of retry.go). It is longer than Timeout: at load
// 15 and more on 2 cores a cluster under a burst of writes can go without
// a leader for tens of seconds at a time, and each attempt can take a
// propose timeout. It delays only the report of a real failure.
const RetryWindow = 2 * Timeout

// New starts opts.Nodes nodes that bootstrap one cluster through gossip
// (bootstrap-expect), and waits until all of them are voters under one leader.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
		if os.Getenv("MAILCLUSTER_TEST_LOG") == "1" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	c := &Cluster{t: t, opts: opts, secret: []byte("test cluster secret, not for production"), links: newLinks(), tls: newTestTLS(t)}
	// The folder first, then Close: cleanups run last-in first-out, so the
	// nodes stop before their folders are removed.
	c.dir = t.TempDir()
	var err error
	if c.ports, err = newPorts(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.ports.release)
	c.startOutside()
	t.Cleanup(c.Close)
	for i := range opts.Nodes {
		m := c.newMember(i, opts.Nodes)
		c.Members = append(c.Members, m)
		c.start(i)
	}
	c.WaitForVoters(opts.Nodes)
	return c
}

func (c *Cluster) newMember(i, expect int) *Member {
	id := fmt.Sprintf("node%d", i+1)
	dir := filepath.Join(c.dir, id)
	m := &Member{ID: id, Dir: dir}
	m.cfg = c.memberConfig(id, dir, expect)
	for _, other := range c.Members {
		if other.Node != nil {
			m.cfg.Join = append(m.cfg.Join, other.Node.GossipAddr())
		}
	}
	return m
}

// memberConfig is a fresh configuration with its own free ports.
func (c *Cluster) memberConfig(id, dir string, expect int) node.Config {
	addr := func(udp bool) string {
		a, err := c.ports.free(udp)
		if err != nil {
			c.t.Fatal(err)
		}
		return a
	}
	return node.Config{
		NodeID:            id,
		DataDir:           dir,
		Secret:            c.secret,
		GossipAddr:        addr(true),
		ClusterAddr:       addr(false),
		HTTPAddr:          addr(false),
		AdminToken:        "test-admin-token",
		BootstrapExpect:   expect,
		Profile:           node.TestProfile(),
		ProposeTimeout:    3 * time.Second,
		DeadServerTimeout: time.Hour,
		RepairInterval:    300 * time.Millisecond,
		ScrubInterval:     time.Hour, // tests scrub on demand
		GCInterval:        time.Hour, // tests collect garbage on demand
		GCGrace:           time.Hour,
		Hostname:          id + ".test",
		TLS:               c.tls.server,
		SMTPAddr:          addr(false),
		SubmissionAddr:    addr(false),
		SubmissionsAddr:   addr(false),
		IMAPAddr:          addr(false),
		IMAPSAddr:         addr(false),
		POP3Addr:          addr(false),
		POP3SAddr:         addr(false),
		DNSServers:        []string{c.dns.Addr()},
		RemoteSMTPPort:    c.sink.Port(),
		Logger:            c.opts.Logger,
		Links:             view{l: c.links, self: id},
	}
}

// startOutside starts the loopback DNS and sink the nodes see as the
// outside world; they stop after the nodes (cleanups run last-in first-out).
func (c *Cluster) startOutside() {
	d, err := simnet.NewDNS("")
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = d.Close() })
	sink, err := simnet.NewSink(simnet.SinkOptions{TLS: c.tls.server})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = sink.Close() })
	if err := d.SetWildcard(sink.Host()); err != nil {
		c.t.Fatal(err)
	}
	c.dns, c.sink = d, sink
}

// checkOutside fails the test loudly when a node would resolve through
// anything but a DNS server on loopback: no test may ask the system's
// resolver (or any other), and none may reach a real mail exchanger.
func (c *Cluster) checkOutside(id string, cfg node.Config) {
	c.t.Helper()
	for _, s := range cfg.DNSServers {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		if ip := net.ParseIP(strings.Trim(host, "[]")); ip == nil || !ip.IsLoopback() {
			c.t.Fatalf("%s: dns_servers has %q: a test node must resolve only through a loopback DNS (the harness's c.DNS()), never the system's resolver or any other", id, s)
		}
	}
}

// start starts member i with its saved configuration.
func (c *Cluster) start(i int) {
	c.t.Helper()
	m := c.Members[i]
	var n *node.Node
	for attempt := 0; ; attempt++ {
		cfg := m.cfg
		if c.opts.Configure != nil {
			c.opts.Configure(i, &cfg)
		}
		c.checkOutside(m.ID, cfg)
		var err error
		if n, err = node.Start(cfg); err == nil {
			break
		}
		// Another process may have grabbed one of the free ports we picked.
		// On a first start (no ports pinned yet) pick new ones and retry.
		if m.started || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			c.t.Fatalf("start %s: %v", m.ID, err)
		}
		fresh := c.memberConfig(m.ID, m.Dir, m.cfg.BootstrapExpect)
		fresh.Join, fresh.Secret = m.cfg.Join, m.cfg.Secret
		m.cfg = fresh
	}
	m.started = true
	m.Node = n
	// Pin the ports so a restart comes back at the same addresses.
	m.cfg.GossipAddr = n.GossipAddr()
	m.cfg.ClusterAddr = n.ClusterAddr()
	m.cfg.HTTPAddr = n.HTTPAddr()
	for name, addr := range map[string]*string{
		node.EndpointSMTP: &m.cfg.SMTPAddr, node.EndpointSubmission: &m.cfg.SubmissionAddr,
		node.EndpointSubmissions: &m.cfg.SubmissionsAddr, node.EndpointIMAP: &m.cfg.IMAPAddr,
		node.EndpointIMAPS: &m.cfg.IMAPSAddr, node.EndpointPOP3: &m.cfg.POP3Addr, node.EndpointPOP3S: &m.cfg.POP3SAddr,
		node.EndpointManageSieve: &m.cfg.ManageSieveAddr,
	} {
		// Set from the member's config or by Options.Configure: pin what
		// the node bound either way.
		if ep := n.Endpoint(name); ep != "" {
			*addr = ep
		}
	}
	c.links.register(n.GossipAddr(), m.ID)
}

// Node returns member i's running node; it fails the test if i is killed.
func (c *Cluster) Node(i int) *node.Node {
	c.t.Helper()
	if c.Members[i].Node == nil {
		c.t.Fatalf("%s is not running", c.Members[i].ID)
	}
	return c.Members[i].Node
}

// Kill stops member i abruptly: no leave, no leadership transfer. Its data
// stays on disk.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	_ = m.Node.Halt(ctx)
	m.Node = nil
}

// Restart starts a killed member again on its old ports and data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Members[i].Node != nil {
		c.t.Fatalf("%s is running", c.Members[i].ID)
	}
	c.start(i)
}

// Wipe deletes a killed member's data folder: the disk is lost.
func (c *Cluster) Wipe(i int) {
	c.t.Helper()
	if c.Members[i].Node != nil {
		c.t.Fatalf("wipe %s: kill it first", c.Members[i].ID)
	}
	if err := os.RemoveAll(c.Members[i].Dir); err != nil {
		c.t.Fatal(err)
	}
}

// AddNode starts one more node that joins the running cluster through
// gossip (no bootstrap-expect) and returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	return c.AddNodeWith(nil)
}

// AddNodeWith is AddNode with a change to the new node's configuration.
func (c *Cluster) AddNodeWith(change func(cfg *node.Config)) int {
	c.t.Helper()
	i := len(c.Members)
	m := c.newMember(i, 0)
	if change != nil {
		change(&m.cfg)
	}
	c.Members = append(c.Members, m)
	c.start(i)
	return i
}

// Partition cuts every link between nodes of different groups. Nodes not
// named in any group keep all their links.
func (c *Cluster) Partition(groups ...[]int) { c.partition(false, groups) }

// CutOff partitions member i from every other running member and returns
// those others (the majority side of a 3-node cluster).
func (c *Cluster) CutOff(i int) []int {
	var others []int
	for _, j := range c.Running() {
		if j != i {
			others = append(others, j)
		}
	}
	c.Partition([]int{i}, others)
	return others
}

// PartitionGossip cuts only gossip between the groups; Raft still flows.
func (c *Cluster) PartitionGossip(groups ...[]int) { c.partition(true, groups) }

func (c *Cluster) partition(gossipOnly bool, groups [][]int) {
	for gi, g := range groups {
		for gj, h := range groups {
			if gi == gj {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					c.links.set(c.Members[a].ID, c.Members[b].ID, gossipOnly)
				}
			}
		}
	}
}

// Heal restores every link.
func (c *Cluster) Heal() { c.links.heal() }

// Close stops every node.
func (c *Cluster) Close() {
	for i := range c.Members {
		c.Kill(i)
	}
}

// Running lists the indexes of running members.
func (c *Cluster) Running() []int {
	var out []int
	for i, m := range c.Members {
		if m.Node != nil {
			out = append(out, i)
		}
	}
	return out
}

// WaitFor polls cond every 10 ms until it holds, failing the test after
// Timeout.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	WaitFor(c.t, what, Timeout, cond)
}

// WaitFor polls cond until it holds or timeout passes.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Retry runs a setup step again while it fails for a while only (an
// election on a loaded machine), as a real client would. A step whose
// outcome is unknown is not retried: it may have taken effect (see
// RetryIdempotent and RetryResolving in retry.go for steps that can be).
// What a test asserts must never go through Retry.
func Retry(t testing.TB, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		err := fn()
		if err == nil {
			return
		}
		if !replication.Temporary(err) || errors.Is(err, replication.ErrOutcomeUnknown) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Leader waits until exactly one running member leads and the others
// agree, and returns its index.
func (c *Cluster) Leader() int {
	c.t.Helper()
	return c.LeaderAmong(c.Running())
}

// LeaderAmong waits for a leader among the given members, as they see it.
func (c *Cluster) LeaderAmong(members []int) int {
	c.t.Helper()
	leader := -1
	c.WaitFor("a leader", func() bool {
		leader = -1
		for _, i := range members {
			n := c.Members[i].Node
			if n == nil {
				continue
			}
			if n.Consensus().IsLeader() {
				if leader >= 0 {
					return false
				}
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		for _, i := range members {
			if n := c.Members[i].Node; n != nil {
				if id, _ := n.Consensus().Leader(); id != c.Members[leader].ID {
					return false
				}
			}
		}
		return true
	})
	return leader
}

// Follower returns the index of some running member that is not the leader.
func (c *Cluster) Follower() int {
	c.t.Helper()
	l := c.Leader()
	for _, i := range c.Running() {
		if i != l {
			return i
		}
	}
	c.t.Fatal("no running follower")
	return -1
}

// Voters returns the IDs of the voters in the leader's configuration.
func (c *Cluster) Voters() []string {
	c.t.Helper()
	servers, err := c.Node(c.Leader()).Consensus().Configuration()
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, s := range servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// WaitForVoters waits until the configuration holds n voters.
func (c *Cluster) WaitForVoters(n int) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("%d voters", n), func() bool {
		for _, i := range c.Running() {
			node := c.Members[i].Node
			if !node.Consensus().IsLeader() {
				continue
			}
			servers, err := node.Consensus().Configuration()
			if err != nil {
				return false
			}
			voters := 0
			for _, s := range servers {
				if s.Voter {
					voters++
				}
			}
			return voters == n
		}
		return false
	})
}

// WaitApplied waits until every running member has applied index idx.
func (c *Cluster) WaitApplied(idx uint64) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("every node to apply index %d", idx), func() bool {
		for _, i := range c.Running() {
			if c.Members[i].Node.Consensus().AppliedIndex() < idx {
				return false
			}
		}
		return true
	})
}

// SetDeadServerTimeout changes the timeout for future starts of every member.
func (c *Cluster) SetDeadServerTimeout(d time.Duration) {
	for _, m := range c.Members {
		m.cfg.DeadServerTimeout = d
	}
}
