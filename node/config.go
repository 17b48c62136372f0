package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/dispatch"
	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/outbound"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/imap"
	"github.com/mailcluster/mailcluster/protocol/listen"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
	"github.com/mailcluster/mailcluster/protocol/ops"
	"github.com/mailcluster/mailcluster/protocol/pop3"
	"github.com/mailcluster/mailcluster/protocol/smtp"
)

// Version is reported in gossip and status.
const Version = "0.1.0"

// Links lets a test cut the links between real nodes without touching the
// kernel. peer is a node ID (cluster connections) or a gossip address
// (memberlist packets and streams). Production nodes have none.
type Links interface {
	Allowed(peer string) bool
}

// GossipTiming tunes memberlist's failure detector.
type GossipTiming struct {
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	PushPull       time.Duration
}

// Profile bundles the timings for one kind of network.
type Profile struct {
	Raft   consensus.Timing
	Gossip GossipTiming
	// Reconcile is how often the leader compares gossip with Raft, and how
	// often a fresh node checks whether it can bootstrap.
	Reconcile time.Duration
	// Rejoin is how often a node retries gossip with peers it cannot see.
	Rejoin time.Duration
}

// LANProfile: one site, round trips under 10 ms. A dead leader is replaced
// in about a second; a crashed node is declared failed in about 2 s.
func LANProfile() Profile {
	return Profile{
		Raft: consensus.LANTiming(),
		Gossip: GossipTiming{
			ProbeInterval:  500 * time.Millisecond,
			ProbeTimeout:   250 * time.Millisecond,
			SuspicionMult:  3,
			GossipInterval: 100 * time.Millisecond,
			PushPull:       15 * time.Second,
		},
		Reconcile: time.Second,
		Rejoin:    5 * time.Second,
	}
}

// WANProfile: nodes on several sites, round trips up to a few hundred ms.
func WANProfile() Profile {
	return Profile{
		Raft: consensus.WANTiming(),
		Gossip: GossipTiming{
			ProbeInterval:  3 * time.Second,
			ProbeTimeout:   1500 * time.Millisecond,
			SuspicionMult:  5,
			GossipInterval: 300 * time.Millisecond,
			PushPull:       30 * time.Second,
		},
		Reconcile: 2 * time.Second,
		Rejoin:    15 * time.Second,
	}
}

// TestProfile: everything fast, for in-process clusters on loopback.
func TestProfile() Profile {
	return Profile{
		Raft: consensus.Timing{
			HeartbeatTimeout:   150 * time.Millisecond,
			ElectionTimeout:    150 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
			CommitTimeout:      5 * time.Millisecond,
		},
		Gossip: GossipTiming{
			ProbeInterval:  100 * time.Millisecond,
			ProbeTimeout:   50 * time.Millisecond,
			SuspicionMult:  2,
			GossipInterval: 20 * time.Millisecond,
			PushPull:       2 * time.Second,
		},
		Reconcile: 100 * time.Millisecond,
		Rejoin:    500 * time.Millisecond,
	}
}

// ProfileByName returns "lan" or "wan".
func ProfileByName(name string) (Profile, error) {
	switch name {
	case "", "lan":
		return LANProfile(), nil
	case "wan":
		return WANProfile(), nil
	case "test":
		return TestProfile(), nil
	}
	return Profile{}, fmt.Errorf("unknown profile %q (want lan or wan)", name)
}

// Config is everything one node needs. cmd/mailcluster fills it from TOML,
// flags and the environment; tests fill it directly.
type Config struct {
	NodeID  string
	Zone    string
	DataDir string
	Secret  []byte // the cluster secret: encrypts gossip, authenticates the cluster port

	GossipAddr       string // bind host:port for memberlist (UDP and TCP)
	GossipAdvertise  string // host:port others use; empty: derived from the bind address
	ClusterAddr      string // bind host:port for Raft, forwarding and blob copies
	ClusterAdvertise string // empty: the gossip advertise host with the cluster port
	HTTPAddr         string // health, metrics and admin API
	AdminToken       string // bearer token for /api; empty disables the admin API

	Join            []string // gossip addresses of existing members
	BootstrapExpect int      // 0: never bootstrap, wait to be added

	Profile           Profile
	ProposeTimeout    time.Duration // how long a write waits for a quorum before failing
	DeadServerTimeout time.Duration // how long a member may be gone before the leader removes it
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// Replicas is R, the copies of each message body (default 3, capped at
	// the cluster size). A delivery waits for W = R/2+1 durable copies.
	Replicas int
	// MaxMessageSize limits delivered and appended messages (bytes).
	MaxMessageSize int64
	// MaxMailboxesPerAccount limits each account's mailboxes (0: 1,000,
	// replication.DefaultMaxMailboxesPerAccount; below 0: no limit).
	MaxMailboxesPerAccount int
	// Blob maintenance: repair brings bodies back to R copies, scrub
	// re-verifies stored copies, GC deletes unreferenced ones after GCGrace.
	RepairInterval time.Duration
	ScrubInterval  time.Duration
	GCInterval     time.Duration
	GCGrace        time.Duration

	// Client protocols. An empty address leaves that listener off.
	Hostname        string      // in SMTP banners and Received headers (default: node ID)
	TLS             *tls.Config // certificate for STARTTLS/STLS and the implicit-TLS ports; nil: no TLS
	SMTPAddr        string      // inbound MX, port 25
	SubmissionAddr  string      // submission with STARTTLS, port 587
	SubmissionsAddr string      // submission over implicit TLS, port 465
	IMAPAddr        string      // IMAP with STARTTLS, port 143
	IMAPSAddr       string      // IMAP over implicit TLS, port 993
	POP3Addr        string      // POP3 with STLS, port 110
	POP3SAddr       string      // POP3 over implicit TLS, port 995
	SMTP            smtp.Options
	IMAP            imap.Options
	POP3            pop3.Options
	// ManageSieveAddr is ManageSieve (RFC 5804) with STARTTLS, port 4190:
	// users edit their Sieve filters from their mail program.
	ManageSieveAddr string
	ManageSieve     managesieve.Options
	AuthLimits      auth.LimiterOptions
	// TLSHandshakeTimeout bounds the TLS handshake on every implicit-TLS
	// port (465, 993, 995; and STLS unless POP3.HandshakeTimeout is set):
	// a client that connects and stays silent is dropped after it.
	// Default 30s.
	TLSHandshakeTimeout time.Duration

	// DNSServers are the resolvers (host:port, or an IP for port 53) every
	// DNS lookup of this node goes to, and nothing else: with none the node
	// refuses to start (it never falls back to the system resolver;
	// cmd/mailcluster fills in /etc/resolv.conf's servers as the default).
	DNSServers []string
	// DNSTimeout bounds one exchange with one DNS server (default 5s).
	DNSTimeout time.Duration
	// DNSCacheSize is how many DNS answers this node keeps, each for its
	// TTL (at most an hour; "no such record" a minute). 0: no cache (tests,
	// whose records change under them); mailcluster serve defaults to
	// 10000.
	DNSCacheSize int
	// RemoteSMTPPort is the port dialled at a remote MX (default 25; tests
	// and the dev cluster point it at a simnet sink).
	RemoteSMTPPort int

	// Inbound holds the checks on mail from other servers and the users'
	// own rules (see InboundConfig).
	Inbound InboundConfig

	// The outbound queue (mail for outside the cluster). OutboundExpiry:
	// how long an entry is retried before it fails with a DSN (default 5
	// days). OutboundDelayDSN: after how long a still-undelivered message
	// gets a "delayed" DSN (default 4 h; below 0: never). The delivery
	// pipeline fills both into each queue entry.
	OutboundExpiry   time.Duration
	OutboundDelayDSN time.Duration
	// OutboundRetry is the wait after each failed attempt; the last step
	// repeats (default 2m,5m,10m,15m,30m,1h,2h).
	OutboundRetry []time.Duration
	// OutboundLease is how long a claim on queue entries holds unrenewed
	// (default 10 s): a dead sender's mail moves to another node after it.
	OutboundLease time.Duration
	// OutboundConcurrency caps this node's Sends in progress (default 32);
	// OutboundMaxPerDestination those to one domain or relay (default 4).
	OutboundConcurrency       int
	OutboundMaxPerDestination int
	// OutboundTLS: opportunistic (default), require, verify or none
	// (MTA-STS and DANE still apply where a domain asks for them).
	OutboundTLS string
	// OutboundRootCAs verifies remote certificates where a policy requires
	// it (MTA-STS, outbound_tls verify, a relay); nil: the system's roots.
	// OutboundMTASTSPort is the HTTPS port MTA-STS policies are fetched
	// from (0: 443). Tests set both.
	OutboundRootCAs    *x509.CertPool
	OutboundMTASTSPort int
	// RelayHost ("host:port"; port 465 speaks implicit TLS) sends all
	// outbound mail through that host; RelayUsername/RelayPassword log in
	// there (only over verified TLS).
	RelayHost, RelayUsername, RelayPassword string
	// OutboundOff stops this node's queue worker and the leader's queue
	// clock (tests that drive the queue by hand).
	OutboundOff bool

	Logger *slog.Logger
	Links  Links
}

func (c *Config) validate() error {
	if c.NodeID == "" {
		return errors.New("node_id is empty")
	}
	if c.DataDir == "" {
		return errors.New("data_dir is empty")
	}
	if len(c.Secret) == 0 {
		return errors.New("no cluster secret: set secret (or MAILCLUSTER_SECRET); every node of a cluster needs the same one")
	}
	for name, addr := range map[string]string{"gossip_addr": c.GossipAddr, "cluster_addr": c.ClusterAddr, "http_addr": c.HTTPAddr} {
		if _, _, err := splitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: %v", name, addr, err)
		}
	}
	if err := ops.CheckToken(c.AdminToken); err != nil {
		return err
	}
	if c.BootstrapExpect < 0 {
		return errors.New("bootstrap_expect must be 0 or more")
	}
	if c.Profile.Reconcile == 0 {
		c.Profile = LANProfile()
	}
	if c.DeadServerTimeout == 0 {
		c.DeadServerTimeout = 10 * time.Minute
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 {
		return errors.New("replicas must be at least 1")
	}
	if c.GCGrace == 0 {
		c.GCGrace = time.Hour
	}
	if c.Hostname == "" {
		c.Hostname = c.NodeID
	}
	if c.TLSHandshakeTimeout <= 0 {
		c.TLSHandshakeTimeout = listen.DefaultHandshakeTimeout
	}
	if len(c.DNSServers) == 0 {
		return errors.New("dns_servers is empty: name the DNS resolvers this node may ask (mailcluster serve defaults to the nameservers of /etc/resolv.conf); a node never falls back to the system resolver")
	}
	if _, err := dnsclient.New(c.DNSServers, c.DNSTimeout); err != nil {
		return fmt.Errorf("dns_servers: %w", err)
	}
	if c.RemoteSMTPPort == 0 {
		c.RemoteSMTPPort = 25
	}
	if c.RemoteSMTPPort < 1 || c.RemoteSMTPPort > 65535 {
		return fmt.Errorf("smtp_remote_port %d: want 1 to 65535", c.RemoteSMTPPort)
	}
	if err := c.validateOutbound(); err != nil {
		return err
	}
	if err := c.Inbound.validate(c.Hostname); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (c *Config) validateOutbound() error {
	if c.OutboundExpiry == 0 {
		c.OutboundExpiry = 5 * 24 * time.Hour
	}
	if c.OutboundExpiry < 0 {
		return errors.New("outbound_expiry must be positive")
	}
	if c.OutboundDelayDSN == 0 {
		c.OutboundDelayDSN = 4 * time.Hour
	}
	if c.OutboundLease == 0 {
		c.OutboundLease = 10 * time.Second
	}
	if c.OutboundLease < 100*time.Millisecond || c.OutboundLease > time.Hour {
		return fmt.Errorf("outbound_lease %s: want 100ms to 1h", c.OutboundLease)
	}
	if len(c.OutboundRetry) == 0 {
		c.OutboundRetry = dispatch.DefaultRetry()
	}
	for _, d := range c.OutboundRetry {
		if d <= 0 {
			return errors.New("outbound_retry: every step must be a positive duration")
		}
	}
	if c.OutboundConcurrency == 0 {
		c.OutboundConcurrency = 32
	}
	if c.OutboundMaxPerDestination == 0 {
		c.OutboundMaxPerDestination = 4
	}
	if c.OutboundConcurrency < 0 || c.OutboundMaxPerDestination < 0 {
		return errors.New("outbound_concurrency and outbound_max_per_destination must be positive")
	}
	switch c.OutboundTLS {
	case "":
		c.OutboundTLS = string(outbound.TLSOpportunistic)
	case string(outbound.TLSOpportunistic), string(outbound.TLSRequire), string(outbound.TLSVerify), string(outbound.TLSNone):
	default:
		return fmt.Errorf("outbound_tls %q: want opportunistic, require, verify or none", c.OutboundTLS)
	}
	if c.RelayHost != "" {
		if _, _, err := net.SplitHostPort(c.RelayHost); err != nil {
			return fmt.Errorf("relay_host %q: want host:port: %v", c.RelayHost, err)
		}
	}
	if (c.RelayUsername != "") != (c.RelayPassword != "") {
		return errors.New("relay_username and relay_password go together")
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	return host, port, nil
}
