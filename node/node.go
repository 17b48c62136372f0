package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-sockaddr"

	"github.com/mailcluster/mailcluster/clusternet"
	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/protocol/ops"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// readySlack is how many applied entries a node may trail the commit index
// and still call itself ready.
const readySlack = 64

// Node is one running cluster member.
type Node struct {
	cfg Config
	log *slog.Logger
	dns *dnsclient.Resolver // every DNS lookup this node makes goes through it
	// spamTrainer learns from IMAP moves into and out of Junk.
	spamTrainer *replication.SpamTrainer

	lock      *os.File
	mux       *clusternet.Mux
	fsm       *state.FSM
	cons      *consensus.Node
	blobs     *blob.Store
	bodies    *blob.Replicator
	store     *replication.Store
	gossip    *gossip
	httpLn    net.Listener
	http      *http.Server
	metrics   *metrics
	advHost   string
	services  map[string]string // endpoint name -> advertised address (gossip)
	endpoints map[string]string // endpoint name -> bound address
	protocols protocolServers

	reconcileCh chan struct{}
	leading     leadership
	peersMu     sync.Mutex
	peers       map[string]string // node ID -> gossip address, for rejoining

	cancel context.CancelFunc
	wg     sync.WaitGroup
	left   atomic.Bool
	// repairKick is set while a kicked repair waits for its read barrier.
	repairKick atomic.Bool
	fatalErr   atomic.Value // error
	stopOnce   sync.Once
	done       chan struct{}
}

// Start brings a node up: it opens the data folder, the cluster port, Raft
// and gossip, and serves HTTP. It returns once everything listens; joining
// or bootstrapping the cluster continues in the background.
func Start(cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	resolver, err := dnsclient.New(cfg.DNSServers, cfg.DNSTimeout)
	if err != nil {
		return nil, fmt.Errorf("dns_servers: %w", err)
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("node", cfg.NodeID),
		dns:         resolver.WithCache(cfg.DNSCacheSize),
		reconcileCh: make(chan struct{}, 1),
		peers:       make(map[string]string),
		done:        make(chan struct{}),
		services:    make(map[string]string),
		endpoints:   make(map[string]string),
	}
	// On any failure below, release what was opened, in reverse order.
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	if n.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = n.lock.Close() })
	if err = checkNodeID(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	if n.advHost, err = advertiseHost(&cfg); err != nil {
		return nil, err
	}

	identity, err := clusternet.NewIdentity(cfg.Secret, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	var policy clusternet.Policy
	if cfg.Links != nil {
		policy = cfg.Links
	}
	if n.mux, err = clusternet.Listen(cfg.ClusterAddr, identity, policy, n.log); err != nil {
		return nil, fmt.Errorf("cluster_addr %s: %w", cfg.ClusterAddr, err)
	}
	closers = append(closers, func() { _ = n.mux.Close() })
	if n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http_addr %s: %w", cfg.HTTPAddr, err)
	}
	closers = append(closers, func() { _ = n.httpLn.Close() })
	clients, err := n.openClientListeners()
	if err != nil {
		return nil, err
	}
	closers = append(closers, clients.close)

	feed := replication.NewFeed()
	if n.fsm, err = state.Open(filepath.Join(cfg.DataDir, "state", "state.db"), state.Options{
		OnCommit:  feed.Publish,
		OnRestore: feed.Reset,
		Logger:    n.log,
	}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = n.fsm.Close() })
	if n.blobs, err = blob.Open(filepath.Join(cfg.DataDir, "blobs"), blob.Options{
		MaxBlobSize: cfg.MaxMessageSize,
		GCGrace:     cfg.GCGrace,
		Logger:      n.log,
	}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = n.blobs.Close() })

	clusterAdvertise := cfg.ClusterAdvertise
	if clusterAdvertise == "" {
		clusterAdvertise = net.JoinHostPort(n.advHost, strconv.Itoa(n.mux.Addr().(*net.TCPAddr).Port))
	}
	n.cons, err = consensus.Open(consensus.Config{
		NodeID:            cfg.NodeID,
		Advertise:         clusterAdvertise,
		Dir:               filepath.Join(cfg.DataDir, "raft"),
		RaftLink:          n.mux.Channel(clusternet.ChannelRaft),
		RPCLink:           n.mux.Channel(clusternet.ChannelRPC),
		StateMachine:      n.fsm,
		Timing:            cfg.Profile.Raft,
		ProposeTimeout:    cfg.ProposeTimeout,
		SnapshotThreshold: cfg.SnapshotThreshold,
		SnapshotInterval:  cfg.SnapshotInterval,
		TrailingLogs:      cfg.TrailingLogs,
		Logger:            n.log,
		OnFatal:           n.fatal,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = n.cons.Shutdown() })

	blobLink := n.mux.Channel(clusternet.ChannelBlob)
	n.bodies = blob.NewReplicator(n.blobs, blob.NewClient(n.blobs, blobLink), (*blobMembers)(n),
		replication.NewReferences(n.fsm, n.caughtUpLocally), blob.ReplicatorOptions{
			Replicas:       cfg.Replicas,
			ClusterSize:    n.clusterSize,
			RepairInterval: cfg.RepairInterval,
			ScrubInterval:  cfg.ScrubInterval,
			GCInterval:     cfg.GCInterval,
			Logger:         n.log,
		})
	closers = append(closers, n.bodies.Close)
	n.store = replication.New(replication.Config{
		Consensus:      n.cons,
		State:          n.fsm,
		Bodies:         n.bodies,
		Feed:           feed,
		MaxMessageSize: cfg.MaxMessageSize,
		Logger:         n.log,

		MaxMailboxesPerAccount: cfg.MaxMailboxesPerAccount,
	})
	go func() { _ = n.mux.Serve() }()

	n.spamTrainer = replication.NewSpamTrainer(n.store, n.log.With("part", "spam"))
	closers = append(closers, n.spamTrainer.Close)
	n.metrics = newMetrics(n)
	if err = n.startProtocols(clients); err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.stopProtocols(false) })

	record := Record{
		ID:       cfg.NodeID,
		Zone:     cfg.Zone,
		Cluster:  clusterAdvertise,
		HTTP:     n.advertised(n.httpLn.Addr()),
		Services: n.services,
		Version:  Version,
		Expect:   cfg.BootstrapExpect,
		Fresh:    !n.cons.HasState(),
	}
	if n.gossip, err = startGossip(&cfg, n.advHost, record); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = n.gossip.list.Shutdown() })
	n.shareLogins() // failed logins count on every node (protocols.go)
	n.loadPeers()

	n.http = ops.NewServer(ops.NewHandler(ops.Options{
		Cluster: n,
		Token:   cfg.AdminToken,
		Metrics: n.metrics.handler(),
		Admin:   n.store,
		Logger:  n.log,

		Sieve: sieveScripts{n.store}, SieveCheck: checkSieve, SieveMaxScriptSize: state.MaxSieveScriptSize,
	}), ops.DefaultTimeouts(), n.log)
	go func() {
		if err := n.http.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.goLoop(func() { n.bootstrapLoop(ctx) })
	n.goLoop(func() { n.watchLoop(ctx) })
	n.goLoop(func() { n.leadershipLoop(ctx) })
	n.goLoop(func() { n.rejoinLoop(ctx) })
	blobServer := blob.NewServer(n.blobs, blobLink, n.log)
	n.goLoop(func() { _ = blobServer.Serve(ctx) })
	n.goLoop(func() { _ = n.bodies.Run(ctx) })
	if err = n.startOutbound(ctx); err != nil {
		cancel()
		n.wg.Wait()
		return nil, fmt.Errorf("outbound: %w", err)
	}

	n.log.Info("node started", "cluster", clusterAdvertise, "gossip", n.gossip.advertiseAddr(), "http", n.httpLn.Addr().String(),
		"bootstrap_expect", cfg.BootstrapExpect, "has_state", !record.Fresh)
	return n, nil
}

func (n *Node) goLoop(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

// advertiseHost picks the host other nodes should use to reach this one.
func advertiseHost(cfg *Config) (string, error) {
	if cfg.GossipAdvertise != "" {
		host, _, err := splitHostPort(cfg.GossipAdvertise)
		return host, err
	}
	host, _, _ := splitHostPort(cfg.GossipAddr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return host, nil
	}
	if host != "" && net.ParseIP(host) == nil {
		return host, nil // a host name
	}
	ip, err := sockaddr.GetPrivateIP()
	if err != nil || ip == "" {
		return "", errors.New("cannot pick an address to advertise: set gossip_advertise")
	}
	return ip, nil
}

// advertised turns a bound address into one other nodes can dial.
func (n *Node) advertised(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if tcp.IP.IsUnspecified() {
		return net.JoinHostPort(n.advHost, strconv.Itoa(tcp.Port))
	}
	return tcp.String()
}

// ID is this node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Consensus exposes the Raft member, for tests and benchmarks.
func (n *Node) Consensus() *consensus.Node { return n.cons }

// FSM exposes the local state machine, for tests.
func (n *Node) FSM() *state.FSM { return n.fsm }

// Store is this node's replicated mail store.
func (n *Node) Store() *replication.Store { return n.store }

// Bodies exposes the body replicator, for tests and status.
func (n *Node) Bodies() *blob.Replicator { return n.bodies }

// BlobStore exposes the local body files, for tests.
func (n *Node) BlobStore() *blob.Store { return n.blobs }

// HTTPAddr is the bound HTTP address.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// GossipAddr is the advertised gossip address.
func (n *Node) GossipAddr() string { return n.gossip.advertiseAddr() }

// Resolver is the node's DNS resolver: it asks only cfg.DNSServers. Every
// DNS lookup the node makes goes through it.
func (n *Node) Resolver() *dnsclient.Resolver { return n.dns }

// ClusterAddr is the advertised cluster port address.
func (n *Node) ClusterAddr() string { return n.gossip.localRecord().Cluster }

// Done is closed once the node has stopped: after Shutdown, a graceful
// leave, or a fatal state machine error.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err reports why the node stopped on its own, if it did.
func (n *Node) Err() error {
	if err, ok := n.fatalErr.Load().(error); ok {
		return err
	}
	return nil
}

// Left reports whether the node stopped because it left the cluster.
func (n *Node) Left() bool { return n.left.Load() }

func (n *Node) fatal(err error) {
	n.fatalErr.Store(fmt.Errorf("state machine failed: %w", err))
	n.log.Error("stopping node: the replicated state cannot be applied safely", "err", err)
	go func() { _ = n.Shutdown(context.Background()) }()
}

// Shutdown stops the node without leaving the cluster: the other members
// see it as failed until it comes back. A leader hands leadership over
// first, once its clients are done, so a restart (a rolling upgrade) costs
// the others no election. Safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error { return n.stop(ctx, true) }

// Halt stops the node as a crash looks to the others: no leadership
// handover, every connection dropped. Tests use it to kill a node in
// process; data on disk stays as a crash would leave it.
func (n *Node) Halt(ctx context.Context) error { return n.stop(ctx, false) }

func (n *Node) stop(ctx context.Context, handOver bool) error {
	n.stopOnce.Do(func() {
		n.cancel()
		n.stopProtocols(handOver)
		n.spamTrainer.Close()
		_ = n.http.Shutdown(ctx)
		if handOver && n.cons.IsLeader() {
			if err := n.cons.TransferLeadership(); err != nil {
				n.log.Warn("stopping: leadership transfer failed; the others will elect a leader", "err", err)
			} else {
				n.log.Info("stopping: handed leadership over")
			}
		}
		_ = n.gossip.list.Shutdown()
		n.wg.Wait()
		n.bodies.Close()
		_ = n.cons.Shutdown()
		_ = n.mux.Close()
		_ = n.blobs.Close()
		_ = n.fsm.Close()
		_ = n.lock.Close()
		n.log.Info("node stopped")
		close(n.done)
	})
	<-n.done
	return nil
}

// caughtUpLocally reports whether this node's state has applied the log up
// to the commit index it knows, with a known leader: the condition for
// trusting "unreferenced" before deleting a body.
func (n *Node) caughtUpLocally() bool { return n.Ready(context.Background()) == nil }

// clusterSize counts the servers in the Raft configuration, dead ones
// included: R is capped at it.
func (n *Node) clusterSize() int {
	servers, err := n.cons.Configuration()
	if err != nil || len(servers) == 0 {
		return 0
	}
	return len(servers)
}

// Ready reports nil once the node has a leader and has applied the log up
// to (nearly) the commit index.
func (n *Node) Ready(context.Context) error {
	leader, _ := n.cons.Leader()
	if leader == "" {
		return errors.New("no leader known")
	}
	st := n.cons.Status()
	if st.CommitIndex > st.AppliedIndex+readySlack {
		return fmt.Errorf("catching up: applied %d of %d", st.AppliedIndex, st.CommitIndex)
	}
	return nil
}
