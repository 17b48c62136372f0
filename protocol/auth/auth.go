package auth

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PlaintextAllowed reports whether a password may travel on this
// connection: only inside TLS, or from the machine itself.
func PlaintextAllowed(remote net.Addr, tlsActive bool) bool {
	return tlsActive || IsLoopback(remote)
}

// IsLoopback reports whether the peer is on this machine.
func IsLoopback(remote net.Addr) bool {
	if remote == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

// ClientIP returns the peer's IP as a string key ("" if unknown). IPv6
// clients are grouped by /64, since one host usually owns a whole /64.
func ClientIP(remote net.Addr) string {
	if remote == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return remote.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// LimiterOptions tune a Limiter; zero values take the defaults.
type LimiterOptions struct {
	// IPFailures failed logins from one client address within Window block
	// that address for Block (doubling on each further failure, up to
	// MaxBlock). Default 10.
	IPFailures int
	// AccountFailures failed logins for one account within Window slow
	// every further attempt on it by AccountDelay (whatever the address),
	// without locking the real user out. Default 20.
	AccountFailures int
	Window          time.Duration // default 15m
	Block           time.Duration // default 1m
	MaxBlock        time.Duration // default 1h
	AccountDelay    time.Duration // default 3s
	// FailDelay is spent before answering every failed attempt. Default 1s.
	// The attempt is counted before the password is checked, so guesses
	// sent during the delay (on other connections) count too.
	FailDelay time.Duration
	// MaxConcurrentChecks is how many password hashes (argon2id, about
	// 19 MiB each) this node computes at once; further logins wait for a
	// slot, at most CheckWait, then fail temporarily. Default 4.
	MaxConcurrentChecks int
	CheckWait           time.Duration // default 10s
}

func (o *LimiterOptions) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.IPFailures == 0 {
		o.IPFailures = 10
	}
	if o.AccountFailures == 0 {
		o.AccountFailures = 20
	}
	def(&o.Window, 15*time.Minute)
	def(&o.Block, time.Minute)
	def(&o.MaxBlock, time.Hour)
	def(&o.AccountDelay, 3*time.Second)
	def(&o.FailDelay, time.Second)
	if o.MaxConcurrentChecks <= 0 {
		o.MaxConcurrentChecks = 4
	}
	def(&o.CheckWait, 10*time.Second)
}

// Limiter throttles failed logins. One Limiter is shared by every protocol
// of a node, and its failures are shared with the other nodes (Share,
// Observe), so a guesser gets the same allowance on the cluster as on one
// node. Safe for concurrent use.
type Limiter struct {
	opts LimiterOptions
	now  func() time.Time

	checking chan struct{} // a slot per password check running
	checks   atomic.Uint64 // password checks made
	observed atomic.Uint64 // failures reported by other nodes
	share    atomic.Pointer[func(Failure)]

	mu       sync.Mutex
	ips      map[string]*record
	accounts map[string]*record
}

type record struct {
	failures     []time.Time // within the window
	blockedUntil time.Time
	block        time.Duration
	pending      int // logins from this address being checked now (IPs only)
}

// NewLimiter returns a Limiter.
func NewLimiter(opts LimiterOptions) *Limiter {
	opts.defaults()
	return &Limiter{opts: opts, now: time.Now, ips: map[string]*record{}, accounts: map[string]*record{},
		checking: make(chan struct{}, opts.MaxConcurrentChecks)}
}

// FailDelay is how long to wait before answering a failed attempt.
func (l *Limiter) FailDelay() time.Duration { return l.opts.FailDelay }

// Allow reports whether a login attempt from ip may proceed now. If not,
// retryAfter says how long the address stays blocked.
func (l *Limiter) Allow(ip string) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.ips[ip]
	if r == nil {
		return true, 0
	}
	if wait := r.blockedUntil.Sub(l.now()); wait > 0 {
		return false, wait
	}
	return true, 0
}

// AccountDelay is how long to stall an attempt on account before checking
// the password (0 unless the account is under attack).
func (l *Limiter) AccountDelay(account string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.accounts[strings.ToLower(account)]
	if r == nil {
		return 0
	}
	l.prune(r)
	if len(r.failures) >= l.opts.AccountFailures {
		return l.opts.AccountDelay
	}
	return 0
}

// Failed records a failed attempt.
func (l *Limiter) Failed(ip, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.failIP(ip, now)
	l.failAccount(account, now)
	l.gc(now)
}

// failIP counts a failure for ip and blocks it once it has IPFailures in
// the window. Called with l.mu held.
func (l *Limiter) failIP(ip string, now time.Time) {
	if ip == "" {
		return
	}
	r := l.get(l.ips, ip)
	r.failures = append(r.failures, now)
	l.prune(r)
	if len(r.failures) >= l.opts.IPFailures {
		switch {
		case r.block == 0:
			r.block = l.opts.Block
		case r.block < l.opts.MaxBlock:
			r.block = min(2*r.block, l.opts.MaxBlock)
		}
		r.blockedUntil = now.Add(r.block)
	}
}

func (l *Limiter) failAccount(account string, now time.Time) {
	if account == "" {
		return
	}
	r := l.get(l.accounts, strings.ToLower(account))
	r.failures = append(r.failures, now)
	l.prune(r)
}

// Succeeded forgets an address's failures after a good login.
func (l *Limiter) Succeeded(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.ips[ip]; r != nil && r.pending > 0 {
		// Other logins from the address are being checked: keep their
		// count, forget the failures and the block.
		r.failures, r.blockedUntil, r.block = nil, time.Time{}, 0
		return
	}
	delete(l.ips, ip)
}

func (l *Limiter) get(m map[string]*record, key string) *record {
	r := m[key]
	if r == nil {
		r = &record{}
		m[key] = r
	}
	return r
}

func (l *Limiter) prune(r *record) {
	cutoff := l.now().Add(-l.opts.Window)
	i := 0
	for i < len(r.failures) && r.failures[i].Before(cutoff) {
		i++
	}
	r.failures = r.failures[i:]
}

// gc drops records with nothing left to remember, bounding memory when an
// attacker cycles through addresses.
func (l *Limiter) gc(now time.Time) {
	if len(l.ips)+len(l.accounts) < 10_000 {
		return
	}
	for _, m := range []map[string]*record{l.ips, l.accounts} {
		for k, r := range m {
			l.prune(r)
			if len(r.failures) == 0 && r.pending == 0 && now.After(r.blockedUntil) {
				delete(m, k)
			}
		}
	}
}
