package outbound

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client sends messages to remote SMTP servers. It is safe for concurrent
// use; one Client per node (the MTA-STS cache and the idle connections live
// in it).
type Client struct {
	cfg   Config
	log   *slog.Logger
	https *http.Client
	sts   stsCache

	mu     sync.Mutex
	dests  map[string]*dest
	closed bool
}

// dest is the per-destination state: the concurrency slots and the idle
// connections.
type dest struct {
	sem     chan struct{}
	refs    int // Sends holding or waiting for a slot
	waiting int // Sends waiting for a slot
	idle    []*session
}

// New makes a Client.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger, dests: map[string]*dest{}}
	c.sts.m = map[string]*stsPolicy{}
	c.https = c.newHTTPS()
	return c, nil
}

// Close closes the idle connections (QUIT). Sends in progress finish;
// their connections are then closed rather than kept.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var idle []*session
	for key, d := range c.dests {
		for _, s := range d.idle {
			if s.timer.Stop() {
				idle = append(idle, s)
			}
		}
		d.idle = nil
		c.gc(key, d)
	}
	c.mu.Unlock()
	for _, s := range idle {
		s.quit()
	}
	c.https.CloseIdleConnections()
	return nil
}

// Send hands m to the mail exchanger of domain (or the relay) in one
// transaction and returns one Result per recipient, in the order of
// m.Rcpts; every failure is in the Results (there is no error). It waits
// while MaxPerDestination Sends to the same destination are in progress,
// and ends early, with temporary results, when ctx ends. beforeCommit, if not nil, is called right before the final dot;
// if it returns an error the transaction is abandoned (the connection is
// closed without the dot) and the recipients get temporary results.
func (c *Client) Send(ctx context.Context, domain string, m Message, beforeCommit func() error) []Result {
	domain = normHost(domain)
	res := make([]Result, len(m.Rcpts))
	var pending []int
	for i, r := range m.Rcpts {
		res[i].Rcpt = r.Addr
		if err := checkAddr(r.Addr, true); err != nil {
			res[i] = permanent(553, "5.1.3", "", "bad recipient address: %v", err).result(r.Addr)
			continue
		}
		pending = append(pending, i)
	}
	if len(pending) == 0 {
		return res
	}
	setAll := func(o outcome) {
		for _, i := range pending {
			res[i] = o.result(m.Rcpts[i].Addr)
		}
	}
	if err := checkAddr(m.From, false); err != nil {
		setAll(permanent(553, "5.1.7", "", "bad sender address: %v", err))
		return res
	}
	key := domain
	if c.cfg.Relay != "" {
		key = "relay " + c.cfg.Relay
	}
	d, err := c.acquire(ctx, key)
	if err != nil {
		setAll(temporary(451, "4.4.5", "", "gave up waiting for a connection slot to %s: %v", key, err))
		return res
	}
	defer c.release(key, d)

	p, o := c.plan(ctx, domain)
	if o != nil {
		setAll(*o)
		return res
	}
	// Every host that failed says why, in order: the DSN's diagnostic.
	var last *outcome
	var why []string
	failed := func(o outcome) {
		last = &o
		if len(why) < 5 {
			why = append(why, o.text)
		}
	}
	if p.refused != "" {
		failed(temporary(451, "4.7.5", "", "%s", p.refused))
	}

	// An idle connection to one of the hosts still allowed.
	if s := c.takeIdle(key, d, p); s != nil {
		s.bind(ctx)
		if err := s.c.Reset(); err == nil {
			c.finish(key, d, s, c.transactAll(ctx, s, m, pending, res, beforeCommit))
			return res
		}
		s.close()
	}

	tried := 0
	for _, t := range p.targets {
		sec, o := c.hostSecurity(ctx, domain, p, t)
		if o != nil {
			failed(*o)
			continue
		}
		ips, o := c.addresses(ctx, t.host)
		if o != nil {
			failed(*o)
			continue
		}
		for _, ip := range ips {
			if tried >= c.cfg.MaxAddresses || ctx.Err() != nil {
				break
			}
			tried++
			s, err := c.connect(ctx, t, ip, sec, false)
			if errors.Is(err, errRetryPlain) {
				s, err = c.connect(ctx, t, ip, sec, true)
			}
			var he *hostError
			if errors.As(err, &he) {
				failed(he.o)
				c.log.Debug("outbound: host failed", "domain", domain, "host", t.host, "ip", ip.String(), "reply", he.o.text)
				continue
			} else if err != nil {
				failed(temporary(451, "4.4.2", t.host, "%s [%s]: %v", t.host, ip, err))
				continue
			}
			c.finish(key, d, s, c.transactAll(ctx, s, m, pending, res, beforeCommit))
			return res
		}
	}
	switch {
	case ctx.Err() != nil && tried == 0:
		failed(temporary(451, "4.4.2", "", "cancelled before a connection to %s: %v", domain, ctx.Err()))
		why = []string{last.text}
	case last == nil:
		failed(temporary(451, "4.4.4", "", "no usable mail exchanger for %s", domain))
	}
	o = last
	o.text = strings.Join(why, "; ")
	setAll(*o)
	return res
}

// finish keeps a session for the next Send or closes it.
func (c *Client) finish(key string, d *dest, s *session, keep bool) {
	if !keep || !s.unbind() {
		s.close()
		return
	}
	c.putIdle(key, d, s)
}

// target is one host to try.
type target struct {
	host        string // MX host name, or the relay's host
	port        int
	relay       bool
	implicitTLS bool
}

// plan is where a Send goes and under which policy.
type plan struct {
	targets []target
	sts     *stsPolicy // nil: none
	relay   bool
	refused string // hosts left out by MTA-STS enforce, said in the failure
}

func (c *Client) plan(ctx context.Context, domain string) (plan, *outcome) {
	if c.cfg.Relay != "" {
		h, ps, _ := net.SplitHostPort(c.cfg.Relay)
		port, err := strconv.Atoi(ps)
		if err != nil {
			o := temporary(451, "4.3.5", "", "bad relay port %q", ps)
			return plan{}, &o
		}
		return plan{relay: true, targets: []target{{host: normHost(h), port: port, relay: true, implicitTLS: c.cfg.RelayImplicitTLS}}}, nil
	}
	r, o := lookupRoute(ctx, c.cfg.Resolver, domain)
	if o != nil {
		return plan{}, o
	}
	p := plan{sts: c.stsPolicy(ctx, domain)}
	var left []string
	for _, h := range r.hosts {
		if p.sts != nil && p.sts.mode != stsNone && !p.sts.matches(h) {
			if p.sts.mode == stsEnforce {
				left = append(left, h)
				continue
			}
			c.log.Warn("outbound: MTA-STS testing: MX host not in policy", "domain", domain, "host", h)
		}
		p.targets = append(p.targets, target{host: h, port: c.cfg.Port})
	}
	if len(left) > 0 {
		p.refused = "MTA-STS policy of " + domain + " (enforce) does not allow MX host " + strings.Join(left, ", ")
	}
	if len(p.targets) == 0 {
		o := temporary(451, "4.7.5", "", "%s; no MX host left to try", p.refused)
		return plan{}, &o
	}
	return p, nil
}

// security is what TLS a host needs.
type security struct {
	requireTLS bool
	reason     string   // why TLS is required, for the failure text
	verify     bool     // PKIX verification for names[0]
	dane       []TLSA   // DANE verification (takes precedence)
	names      []string // acceptable names (DANE-TA): the host, the domain
	stsTesting bool     // log what an enforced policy would refuse
	auth       bool     // relay AUTH: verified TLS first
}

func (c *Client) hostSecurity(ctx context.Context, domain string, p plan, t target) (security, *outcome) {
	sec := security{names: []string{t.host}}
	switch c.cfg.TLS {
	case TLSRequire:
		sec.requireTLS, sec.reason = true, "the TLS policy (require)"
	case TLSVerify:
		sec.requireTLS, sec.verify, sec.reason = true, true, "the TLS policy (verify)"
	}
	if t.relay {
		if c.cfg.RelayUsername != "" {
			sec.requireTLS, sec.verify, sec.auth, sec.reason = true, true, true, "relay authentication"
		}
		return sec, nil
	}
	sec.names = append(sec.names, domain)
	if p.sts != nil {
		switch p.sts.mode {
		case stsEnforce:
			sec.requireTLS, sec.verify = true, true
			sec.reason = "the MTA-STS policy of " + domain + " (enforce)"
		case stsTesting:
			sec.stsTesting = true
		}
	}
	if c.cfg.DisableDANE {
		return sec, nil
	}
	name := "_" + strconv.Itoa(t.port) + "._tcp." + t.host
	recs, authentic, err := c.cfg.Resolver.LookupTLSA(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		// RFC 7672 §2.2: a failed TLSA lookup may hide a downgrade; skip the host.
		o := temporary(451, "4.7.5", t.host, "TLSA lookup for %s failed, host skipped (RFC 7672): %v", name, err)
		return sec, &o
	case authentic && len(recs) > 0:
		sec.requireTLS, sec.stsTesting = true, false
		sec.reason = "DANE (authentic TLSA records at " + name + ")"
		if u := usableTLSA(recs); len(u) > 0 {
			sec.dane, sec.verify = u, false
		} else {
			// None usable: TLS is still required, without authentication.
			sec.verify = false
		}
	}
	return sec, nil
}

// addresses resolves a host (or takes an IP literal), IPv4 and IPv6 in turn.
func (c *Client) addresses(ctx context.Context, host string) ([]net.IP, *outcome) {
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		return []net.IP{ip}, nil
	}
	ips, err := c.cfg.Resolver.LookupIP(ctx, host)
	if errors.Is(err, ErrNotFound) || (err == nil && len(ips) == 0) {
		o := temporary(451, "4.4.4", host, "mail exchanger %s has no address", host)
		return nil, &o
	}
	if err != nil {
		o := temporary(451, "4.4.3", host, "address lookup for %s failed: %v", host, err)
		return nil, &o
	}
	return interleave(ips), nil
}

// transactAll delivers to pending on s in as many transactions as the
// remote's recipient limit needs: batches of LIMITS RCPTMAX (RFC 9422), and
// the recipients refused with "too many recipients" (452, 4.5.3) again in a
// new transaction while each one makes progress. It returns whether s may
// be kept.
func (c *Client) transactAll(ctx context.Context, s *session, m Message, pending []int, res []Result, beforeCommit func() error) bool {
	for {
		batch := pending
		if n := s.rcptMax(); n > 0 && len(batch) > n {
			batch = batch[:n]
		}
		keep := c.transact(ctx, s, m, batch, res, beforeCommit)
		var again []int
		progress := false
		for _, i := range batch {
			if res[i].Delivered || res[i].Permanent {
				progress = true
			} else if res[i].Code == 452 || res[i].Enhanced == "4.5.3" {
				again = append(again, i)
			}
		}
		rest := pending[len(batch):]
		if !progress {
			again = nil
		}
		next := append(again, rest...)
		if len(next) == 0 {
			return keep
		}
		if !keep || !progress {
			o := temporary(451, "4.4.2", s.host, "not attempted: the transaction with %s before this recipient's failed", s.host)
			if progress {
				o.text = "not attempted: the connection to " + s.host + " was lost"
			}
			for _, i := range rest {
				res[i] = o.result(m.Rcpts[i].Addr)
			}
			return keep
		}
		if err := s.c.Reset(); err != nil {
			o, _ := fromReply(err, s.host, "RSET")
			for _, i := range next {
				res[i] = o.result(m.Rcpts[i].Addr)
			}
			return false
		}
		pending = next
	}
}

// transact runs one mail transaction on s and fills in res for pending.
// It returns whether s may be kept for another transaction.
func (c *Client) transact(ctx context.Context, s *session, m Message, pending []int, res []Result, beforeCommit func() error) bool {
	host := s.host
	set := func(idx []int, o outcome) {
		for _, i := range idx {
			res[i] = o.result(m.Rcpts[i].Addr)
		}
	}
	utf8 := needsUTF8(m)
	if ok, _ := s.c.Extension("SMTPUTF8"); utf8 && !ok {
		set(pending, permanent(553, "5.6.7", host, "the message needs SMTPUTF8 (non-ASCII addresses or header, RFC 6531), which %s does not offer; it is not downgraded", host))
		return true
	}
	if ok, _ := s.c.Extension("8BITMIME"); m.EightBit && !ok {
		set(pending, permanent(554, "5.6.3", host, "the message has 8-bit content, and %s does not offer 8BITMIME (RFC 6152); it is not converted", host))
		return true
	}
	size := m.Size + int64(len(m.Header))
	if m.Size == 0 {
		size = 0 // unknown: no SIZE parameter, no check
	}
	if limit, ok := s.c.MaxMessageSize(); ok && limit > 0 && size > int64(limit) {
		set(pending, permanent(552, "5.3.4", host, "the message (%d bytes) is larger than %s accepts (SIZE %d)", size, host, limit))
		return true
	}
	if m.Body == nil {
		set(pending, temporary(451, "4.3.0", "", "no message body to send"))
		return true
	}
	body, err := m.Body()
	if err != nil {
		set(pending, temporary(451, "4.3.0", "", "cannot read the stored message: %v", err))
		return true
	}
	if rc, ok := body.(io.Closer); ok {
		defer rc.Close()
	}
	if err := s.c.Mail(m.From, mailOptions(m, size, utf8)); err != nil {
		o, isReply := fromReply(err, host, "MAIL FROM")
		set(pending, o)
		return isReply
	}
	var accepted []int
	for n, i := range pending {
		err := s.c.Rcpt(m.Rcpts[i].Addr, rcptOptions(m.Rcpts[i]))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		o, isReply := fromReply(err, host, "RCPT TO")
		if !isReply {
			set(pending[n:], o)
			set(accepted, o)
			return false
		}
		set([]int{i}, o)
	}
	if len(accepted) == 0 {
		return true
	}
	w, err := s.c.Data()
	if err != nil {
		o, isReply := fromReply(err, host, "DATA")
		set(accepted, o)
		return isReply
	}
	src := &readErr{r: io.MultiReader(bytes.NewReader(m.Header), body)}
	if _, err := io.Copy(w, src); err != nil {
		if src.err != nil {
			set(accepted, temporary(451, "4.3.0", host, "reading the stored message failed: %v", src.err))
		} else {
			set(accepted, temporary(451, "4.4.2", host, "sending the message to %s failed: %v", host, err))
		}
		return false // without the final dot: abandoned
	}
	if beforeCommit != nil {
		if err := beforeCommit(); err != nil {
			// No final dot: dropping the connection abandons the transaction
			// (RFC 5321 §4.1.1.4: the server must not deliver it).
			set(accepted, temporary(451, "4.3.0", host, "transaction abandoned before the final dot: %v", err))
			return false
		}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		o, isReply := fromReply(err, host, "end of DATA")
		set(accepted, o)
		return isReply
	}
	enh, text := "2.0.0", strings.TrimSpace(resp.StatusText)
	if code, rest, ok := strings.Cut(text, " "); ok && strings.HasPrefix(code, "2.") && strings.Count(code, ".") == 2 {
		enh, text = code, rest
	}
	set(accepted, outcome{delivered: true, code: 250, enhanced: enh, text: text, host: host})
	return true
}

// readErr remembers an error of the message's reader, to tell it from
// the connection's.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// acquire takes a concurrency slot for key, waiting while all are taken.
func (c *Client) acquire(ctx context.Context, key string) (*dest, error) {
	c.mu.Lock()
	d := c.dests[key]
	if d == nil {
		d = &dest{sem: make(chan struct{}, c.cfg.MaxPerDestination)}
		c.dests[key] = d
	}
	d.refs++
	d.waiting++
	c.mu.Unlock()
	select {
	case d.sem <- struct{}{}:
		c.mu.Lock()
		d.waiting--
		c.mu.Unlock()
		return d, nil
	case <-ctx.Done():
		c.mu.Lock()
		d.waiting--
		d.refs--
		c.gc(key, d)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Client) release(key string, d *dest) {
	<-d.sem
	c.mu.Lock()
	d.refs--
	c.gc(key, d)
	c.mu.Unlock()
}

// gc forgets a destination nobody uses. c.mu is held.
func (c *Client) gc(key string, d *dest) {
	if d.refs == 0 && len(d.idle) == 0 && c.dests[key] == d {
		delete(c.dests, key)
	}
}

// takeIdle returns an idle session to a host p allows, under p's policy.
func (c *Client) takeIdle(key string, d *dest, p plan) *session {
	if c.cfg.IdleTimeout < 0 {
		return nil
	}
	allowed := map[string]bool{}
	for _, t := range p.targets {
		allowed[t.host] = true
	}
	needVerified := p.sts != nil && p.sts.mode == stsEnforce
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(d.idle) - 1; i >= 0; i-- {
		s := d.idle[i]
		if !allowed[s.host] || (needVerified && !s.verified) {
			continue
		}
		d.idle = append(d.idle[:i], d.idle[i+1:]...)
		if s.timer.Stop() {
			return s
		}
		// Its timer fired: expire closes it.
	}
	return nil
}

func (c *Client) putIdle(key string, d *dest, s *session) {
	if c.cfg.IdleTimeout < 0 {
		s.quit()
		return
	}
	c.mu.Lock()
	if c.closed || len(d.idle) >= c.cfg.MaxPerDestination {
		c.mu.Unlock()
		s.quit()
		return
	}
	d.idle = append(d.idle, s)
	s.timer = time.AfterFunc(c.cfg.IdleTimeout, func() { c.expire(key, d, s) })
	c.mu.Unlock()
}

func (c *Client) expire(key string, d *dest, s *session) {
	c.mu.Lock()
	for i, x := range d.idle {
		if x == s {
			d.idle = append(d.idle[:i], d.idle[i+1:]...)
			break
		}
	}
	c.gc(key, d)
	c.mu.Unlock()
	s.quit()
}

// waitingFor reports the Sends waiting for a slot to key (tests).
func (c *Client) waitingFor(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.dests[key]; d != nil {
		return d.waiting
	}
	return 0
}

// idleCount reports the idle sessions to key (tests).
func (c *Client) idleCount(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.dests[key]; d != nil {
		return len(d.idle)
	}
	return 0
}
