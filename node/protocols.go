package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/mailauth/srs"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/imap"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
	"github.com/mailcluster/mailcluster/protocol/pop3"
	"github.com/mailcluster/mailcluster/protocol/smtp"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/sieve"
)

// Client endpoint names, as in the gossip record, status and cluster.json.
const (
	EndpointSMTP        = "smtp"
	EndpointSubmission  = "submission"
	EndpointSubmissions = "submissions"
	EndpointIMAP        = "imap"
	EndpointIMAPS       = "imaps"
	EndpointPOP3        = "pop3"
	EndpointPOP3S       = "pop3s"
	EndpointManageSieve = "managesieve"
)

// A service is one client protocol server and the ports it serves. Adding
// a listener is one entry in its listeners (plus the address in Config);
// adding a protocol is one service in clientServices. Every server takes
// its settings from its own Config section, shares the node's login
// limiter, and runs its ports through protocol/listen (one accept loop,
// one connection limit per server, one TLS handshake deadline).
type service struct {
	name      string
	listeners []endpoint
	// start builds the server; afterwards each endpoint's serve works.
	start func(shared sharedDeps) error
	// close stops the server and every session (nil-safe: it may run
	// after a failed start). graceful lets work under way finish first;
	// without it the stop looks like a crash (Halt).
	close func(graceful bool) error
}

// endpoint is one listening port of a service.
type endpoint struct {
	name  string // Endpoint… constant
	addr  string // bind address from Config; "" leaves it off
	tls   bool   // implicit TLS: needs a certificate
	serve func(net.Listener) error
}

// sharedDeps is what every service gets besides its own Config section.
type sharedDeps struct {
	limiter *auth.Limiter
	metrics prometheus.Registerer
	// pipeline is the one way a message enters the store (SMTP, APPEND).
	pipeline *delivery.Pipeline
}

// clientServices is the table of client protocols this node runs.
func (n *Node) clientServices() []*service {
	cfg := &n.cfg
	var (
		smtpSrv  *smtp.Server
		imapSrv  *imap.Server
		pop3Srv  *pop3.Server
		sieveSrv *managesieve.Server
	)
	return []*service{
		{
			name: "smtp",
			listeners: []endpoint{
				{EndpointSMTP, cfg.SMTPAddr, false, func(ln net.Listener) error { return smtpSrv.ServeMX(ln) }},
				{EndpointSubmission, cfg.SubmissionAddr, false, func(ln net.Listener) error { return smtpSrv.ServeSubmission(ln) }},
				{EndpointSubmissions, cfg.SubmissionsAddr, true, func(ln net.Listener) error { return smtpSrv.ServeSubmissions(ln) }},
			},
			start: func(d sharedDeps) (err error) {
				smtpSrv, err = smtp.NewServer(smtp.Config{
					Store: n.store, Hostname: cfg.Hostname, TLS: cfg.TLS, Limiter: d.limiter,
					Logger: n.log.With("proto", "smtp"), Metrics: d.metrics, Options: cfg.SMTP,
					Pipeline: d.pipeline, HandshakeTimeout: cfg.TLSHandshakeTimeout,
				})
				return err
			},
			close: func(graceful bool) error {
				switch {
				case smtpSrv == nil:
					return nil
				case !graceful:
					return smtpSrv.Abort()
				}
				return smtpSrv.Close()
			},
		},
		{
			name: "imap",
			listeners: []endpoint{
				{EndpointIMAP, cfg.IMAPAddr, false, func(ln net.Listener) error { return imapSrv.Serve(ln) }},
				{EndpointIMAPS, cfg.IMAPSAddr, true, func(ln net.Listener) error { return imapSrv.ServeTLS(ln) }},
			},
			start: func(d sharedDeps) (err error) {
				imapSrv, err = imap.NewServer(imap.Config{
					Store: n.store, Hostname: cfg.Hostname, TLS: cfg.TLS, Limiter: d.limiter,
					Logger: n.log.With("proto", "imap"), Metrics: d.metrics, Options: cfg.IMAP,
					Pipeline: d.pipeline, HandshakeTimeout: cfg.TLSHandshakeTimeout, Trainer: n.spamTrainer,
				})
				return err
			},
			close: func(bool) error {
				if imapSrv == nil {
					return nil
				}
				return imapSrv.Close()
			},
		},
		{
			name: "pop3",
			listeners: []endpoint{
				{EndpointPOP3, cfg.POP3Addr, false, func(ln net.Listener) error { return pop3Srv.Serve(ln) }},
				{EndpointPOP3S, cfg.POP3SAddr, true, func(ln net.Listener) error { return pop3Srv.ServeTLS(ln) }},
			},
			start: func(d sharedDeps) (err error) {
				opts := cfg.POP3
				if opts.HandshakeTimeout == 0 { // STLS: the same as port 995 unless set
					opts.HandshakeTimeout = cfg.TLSHandshakeTimeout
				}
				pop3Srv, err = pop3.NewServer(pop3.Config{
					Store: n.store, Hostname: cfg.Hostname, TLS: cfg.TLS, Limiter: d.limiter,
					Logger: n.log.With("proto", "pop3"), Metrics: d.metrics, Options: opts,
					HandshakeTimeout: cfg.TLSHandshakeTimeout,
				})
				return err
			},
			close: func(bool) error {
				if pop3Srv == nil {
					return nil
				}
				return pop3Srv.Close()
			},
		},
		{
			name: "managesieve",
			listeners: []endpoint{
				{EndpointManageSieve, cfg.ManageSieveAddr, false, func(ln net.Listener) error { return sieveSrv.Serve(ln) }},
			},
			start: func(d sharedDeps) (err error) {
				opts := cfg.ManageSieve
				if opts.HandshakeTimeout == 0 {
					opts.HandshakeTimeout = cfg.TLSHandshakeTimeout
				}
				if opts.MaxScriptSize == 0 {
					opts.MaxScriptSize = state.MaxSieveScriptSize
				}
				sieveSrv, err = managesieve.NewServer(managesieve.Config{
					Store: sieveScripts{n.store}, Auth: n.store, Check: checkSieve,
					Extensions: sieve.Extensions, MaxRedirects: sieve.MaxRedirects,
					Hostname: cfg.Hostname, TLS: cfg.TLS, Limiter: d.limiter,
					Logger: n.log.With("proto", "managesieve"), Metrics: d.metrics, Options: opts,
				})
				return err
			},
			close: func(bool) error {
				if sieveSrv == nil {
					return nil
				}
				return sieveSrv.Close()
			},
		},
	}
}

// clientListeners are the open client ports by endpoint name.
type clientListeners map[string]net.Listener

// openClientListeners binds every configured client port before anything
// serves, so a port in use stops Start with one clear line.
func (n *Node) openClientListeners() (clientListeners, error) {
	n.protocols.services = n.clientServices()
	out := make(clientListeners)
	for _, svc := range n.protocols.services {
		for _, ep := range svc.listeners {
			if ep.addr == "" {
				continue
			}
			if ep.tls && n.cfg.TLS == nil {
				out.close()
				return nil, fmt.Errorf("%s_addr is set but no TLS certificate is configured (tls_cert, tls_key)", ep.name)
			}
			ln, err := net.Listen("tcp", ep.addr)
			if err != nil {
				out.close()
				return nil, fmt.Errorf("%s_addr %s: %w", ep.name, ep.addr, err)
			}
			out[ep.name] = ln
		}
	}
	return out, nil
}

func (ls clientListeners) close() {
	for _, ln := range ls {
		_ = ln.Close()
	}
}

// protocolServers are the running client services and the login limiter
// they share.
type protocolServers struct {
	services []*service
	limiter  *auth.Limiter
}

// startProtocols starts every service and serves its open ports.
func (n *Node) startProtocols(ls clientListeners) error {
	n.protocols.limiter = auth.NewLimiter(n.cfg.AuthLimits)
	reg := n.metrics.registry
	registerLoginMetrics(reg, n.protocols.limiter)
	if err := prepareSpool(n.cfg.DataDir); err != nil {
		return err
	}
	pipeline, err := n.pipeline()
	if err != nil {
		return err
	}
	deps := sharedDeps{limiter: n.protocols.limiter, metrics: reg, pipeline: pipeline}
	for _, svc := range n.protocols.services {
		if err := svc.start(deps); err != nil {
			return fmt.Errorf("%s: %w", svc.name, err)
		}
	}
	for _, svc := range n.protocols.services {
		for _, ep := range svc.listeners {
			ln, ok := ls[ep.name]
			if !ok {
				continue
			}
			n.services[ep.name] = n.advertised(ln.Addr())
			n.endpoints[ep.name] = ln.Addr().String()
			serve, name := ep.serve, ep.name
			n.goLoop(func() {
				if err := serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
					n.log.Error("client listener stopped", "endpoint", name, "err", err)
				}
			})
		}
	}
	return nil
}

// registerLoginMetrics exports what the shared login path counts.
func registerLoginMetrics(reg prometheus.Registerer, lim *auth.Limiter) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "mailcluster", Name: "auth_password_checks_total",
			Help: "Passwords checked (hashed) by this node, on every protocol."}, func() float64 { return float64(lim.Checks()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "mailcluster", Name: "auth_blocked_addresses",
			Help: "Client addresses this node refuses logins from now (failures seen on any node count)."}, func() float64 { return float64(lim.Blocked()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "mailcluster", Name: "auth_peer_failures_total",
			Help: "Failed logins other nodes reported through gossip."}, func() float64 { return float64(lim.Observed()) }),
	)
}

// outboundRouting is how the pipeline queues mail for outside addresses:
// expiry and delayed-DSN times from the config, SRS keyed from the
// cluster secret (every node rewrites and reverses alike).
func (n *Node) outboundRouting() *delivery.Outbound {
	return &delivery.Outbound{
		Expiry:   n.cfg.OutboundExpiry,
		DelayDSN: max(n.cfg.OutboundDelayDSN, 0),
		SRS:      srs.New(n.cfg.Secret, nil),
	}
}

// stopProtocols closes every client listener and session.
func (n *Node) stopProtocols(graceful bool) {
	for _, svc := range n.protocols.services {
		_ = svc.close(graceful)
	}
}

// Endpoint returns the bound address of a client endpoint ("" if off).
func (n *Node) Endpoint(name string) string { return n.endpoints[name] }

// shareLogins makes the login limiter cluster-wide: every failed login is
// gossiped (no Raft write: it must be cheap under attack, and a lost one
// costs one guess), and every node counts the failures others report as
// its own. So a guesser spreading attempts over the nodes is blocked at
// the same total as on one node. Gossip may deliver one message more than
// once; each failure carries an ID so it is counted once.
func (n *Node) shareLogins() {
	g, lim := n.gossip, n.protocols.limiter
	if g == nil || lim == nil {
		return
	}
	seen := newRecentIDs(8192)
	observe := func(m loginFailureMsg) {
		if m.IP == "" || m.ID == "" || !seen.add(m.ID) {
			return
		}
		lim.Observe(auth.Failure{IP: m.IP, Account: m.Account})
	}
	g.handle(msgLoginFailure, func(b []byte) {
		var m loginFailureMsg
		if err := json.Unmarshal(b, &m); err == nil {
			observe(m)
		}
	})
	// A broadcast is UDP and may be lost (a loaded machine drops packets):
	// the recent failures also travel in every push/pull exchange, and the
	// IDs keep each one counted once.
	// Only the last two exchanges' worth: long enough to repair a loss,
	// short enough that a node that restarts (and forgot which IDs it
	// counted) counts little twice.
	recent := newRecentFailures(recentFailuresKept, max(2*n.cfg.Profile.Gossip.PushPull, 5*time.Second))
	g.exchangeState(recent.encode, func(b []byte) {
		var ms []loginFailureMsg
		if len(b) > maxFailureState || json.Unmarshal(b, &ms) != nil {
			return
		}
		for _, m := range ms {
			observe(m)
		}
	})
	var seq atomic.Uint64
	lim.Share(func(f auth.Failure) {
		if len(f.Account) > 320 { // longer than any address: keep the packet small
			f.Account = f.Account[:320]
		}
		m := loginFailureMsg{ID: n.cfg.NodeID + "/" + strconv.FormatUint(seq.Add(1), 36), IP: f.IP, Account: f.Account}
		b, err := json.Marshal(m)
		if err != nil {
			return
		}
		recent.add(m)
		g.broadcast(msgLoginFailure, b)
	})
}

// How many of this node's own recent failed logins go in each push/pull
// exchange at most, and the most a peer's list may weigh.
const (
	recentFailuresKept = 512
	maxFailureState    = 1 << 20
)

// recentFailures is a ring of this node's last failed logins.
type recentFailures struct {
	maxAge time.Duration
	mu     sync.Mutex
	ring   []timedFailure
	next   int
}

type timedFailure struct {
	at time.Time
	m  loginFailureMsg
}

func newRecentFailures(n int, maxAge time.Duration) *recentFailures {
	return &recentFailures{maxAge: maxAge, ring: make([]timedFailure, 0, n)}
}

func (r *recentFailures) add(m loginFailureMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := timedFailure{at: time.Now(), m: m}
	if len(r.ring) < cap(r.ring) {
		r.ring = append(r.ring, f)
		return
	}
	r.ring[r.next] = f
	r.next = (r.next + 1) % len(r.ring)
}

// encode is the failures younger than maxAge, as JSON.
func (r *recentFailures) encode() []byte {
	r.mu.Lock()
	cutoff := time.Now().Add(-r.maxAge)
	out := make([]loginFailureMsg, 0, len(r.ring))
	for _, f := range r.ring {
		if f.at.After(cutoff) {
			out = append(out, f.m)
		}
	}
	r.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// loginFailureMsg is a failed login as gossiped.
type loginFailureMsg struct {
	ID      string `json:"id"` // origin node ID and a sequence number
	IP      string `json:"ip"`
	Account string `json:"account,omitempty"`
}

// recentIDs remembers the last n IDs added.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add reports whether id is new, and remembers it.
func (r *recentIDs) add(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % len(r.ring)
	r.set[id] = struct{}{}
	return true
}
