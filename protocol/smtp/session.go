package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// session is one go-smtp session: from EHLO to the next EHLO, STARTTLS or
// the end of the connection. What must outlive it is in conn.
type session struct {
	srv    *Server
	mode   mode
	conn   *conn
	remote net.Addr
	helo   string
	tls    *tls.ConnectionState

	mu      sync.Mutex // BDAT runs Data on its own goroutine, concurrently with Reset/Logout
	account string     // authenticated account, "" if none
	txn     transaction
}

// transaction is the envelope of the message being sent.
type transaction struct {
	active   bool
	from     string
	utf8     bool
	size     int64    // declared with SIZE=, 0 if not
	rcpts    []string // RCPT TO addresses as accepted
	accounts []string // local accounts to deliver to, without duplicates
}

func (s *Server) newSession(c *gosmtp.Conn, md mode) (gosmtp.Session, error) {
	nc := c.Conn()
	cn := connOf(nc)
	if cn == nil {
		return nil, errors.New("smtp: unexpected connection type")
	}
	cn.setTop(nc)
	sess := &session{srv: s, mode: md, conn: cn, remote: nc.RemoteAddr(), helo: sanitizeHelo(c.Hostname())}
	if st, ok := c.TLSConnectionState(); ok {
		sess.tls = &st
	}
	return sess, nil
}

var _ gosmtp.AuthSession = (*session)(nil)

// lookupCtx bounds one store read (with its read barrier) at MAIL or RCPT.
func (s *session) lookupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.srv.ctx, s.srv.opts.DeliveryTimeout)
}

// fail counts a refused command and returns its reply; past MaxErrors the
// reply becomes 421 and the connection closes after it.
func (s *session) fail(stage string, r *refusal) error {
	s.srv.metrics.rejected.WithLabelValues(s.mode.String(), stage, r.reason).Inc()
	if s.conn.countError() {
		s.srv.metrics.rejected.WithLabelValues(s.mode.String(), "session", replyTooManyErrors.reason).Inc()
		s.srv.log.Info("closing: too many errors", "session", s.conn.id, "remote", s.remote.String(), "last", r.reason)
		return replyTooManyErrors.reply
	}
	return r.reply
}

// ---- AUTH ----------------------------------------------------------------

func (s *session) plaintextAllowed() bool { return auth.PlaintextAllowed(s.remote, s.tls != nil) }

// AuthMechanisms is what EHLO advertises: nothing on the MX port, nothing
// before TLS unless the client is on this machine.
func (s *session) AuthMechanisms() []string {
	if s.mode == modeMX || !s.plaintextAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	switch {
	case s.mode == modeMX:
		return nil, s.fail("auth", replyNoAuthOnMX)
	case !s.plaintextAllowed():
		return nil, s.fail("auth", replyEncryptionRequired)
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return newPlainServer(s.login), nil
	case sasl.Login:
		return newLoginServer(s.login), nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// login checks credentials with the shared throttling of protocol/auth.
func (s *session) login(identity, username, password string) error {
	ip := auth.ClientIP(s.remote)
	if ok, wait := s.srv.limiter.Allow(ip); !ok {
		s.srv.metrics.auth.WithLabelValues("throttled").Inc()
		return s.fail("auth", replyLoginThrottled(roundUp(wait).String()))
	}
	ctx, cancel := s.lookupCtx()
	defer cancel()
	if d := s.srv.limiter.AccountDelay(username); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return replyShuttingDown.reply
		}
	}
	var account string
	err := replication.ErrAuthFailed
	if identity == "" || identity == username { // no proxy authorization
		account, err = s.srv.store.authenticate(ctx, username, password)
	}
	switch {
	case err == nil:
		s.srv.limiter.Succeeded(ip)
		s.srv.metrics.auth.WithLabelValues("ok").Inc()
		s.mu.Lock()
		s.account = account
		s.mu.Unlock()
		s.srv.log.Debug("authenticated", "session", s.conn.id, "account", account)
		return nil
	case errors.Is(err, replication.ErrAuthFailed):
		s.srv.limiter.Failed(ip, username)
		s.srv.metrics.auth.WithLabelValues("failed").Inc()
		s.srv.log.Info("login failed", "session", s.conn.id, "remote", s.remote.String(), "user", username)
		_ = sleep(ctx, s.srv.limiter.FailDelay())
		return s.fail("auth", replyAuthFailed)
	}
	s.srv.metrics.auth.WithLabelValues("error").Inc()
	s.srv.log.Warn("login check failed", "session", s.conn.id, "err", err)
	return s.fail("auth", replyAuthUnavailable)
}

func roundUp(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- MAIL FROM -----------------------------------------------------------

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.mu.Lock()
	s.txn = transaction{}
	account := s.account
	s.mu.Unlock()
	s.conn.setInTxn(false)

	if s.mode != modeMX && account == "" {
		return s.fail("mail", replyAuthRequired)
	}
	utf8 := opts != nil && opts.UTF8
	if !isASCII(from) && !utf8 {
		return s.fail("mail", replyNeedUTF8Address)
	}
	if !validPath(from) {
		return s.fail("mail", replyBadSender)
	}
	if account != "" && from != "" {
		if r := s.checkOwner(account, from); r != nil {
			return s.fail("mail", r)
		}
	}
	var size int64
	if opts != nil {
		size = opts.Size
	}
	s.mu.Lock()
	s.txn = transaction{active: true, from: from, utf8: utf8, size: size}
	s.mu.Unlock()
	s.conn.setInTxn(true)
	return nil
}

// checkOwner refuses a sender address the account does not own.
func (s *session) checkOwner(account, from string) *refusal {
	ctx, cancel := s.lookupCtx()
	defer cancel()
	owned, err := s.srv.store.owns(ctx, account, from)
	if err == nil && !owned {
		// The alias may have been created a moment ago on another node.
		if err = s.srv.store.barrier(ctx); err == nil {
			owned, err = s.srv.store.owns(ctx, account, from)
		}
	}
	switch {
	case err != nil:
		return lookupReply(err)
	case !owned:
		return replySenderNotOwned(from)
	}
	return nil
}

// ---- RCPT TO -------------------------------------------------------------

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.mu.Lock()
	txn, account := s.txn, s.account
	s.mu.Unlock()
	if !txn.active {
		return s.fail("rcpt", replyBadSequence)
	}
	if !isASCII(to) && !txn.utf8 {
		return s.fail("rcpt", replyNeedUTF8Address)
	}
	addr, err := state.NormalizeAddress(to)
	if err != nil {
		return s.fail("rcpt", replyBadRecipient)
	}
	ctx, cancel := s.lookupCtx()
	defer cancel()
	accounts, r := s.resolveRecipient(ctx, addr, account != "", txn.size)
	if r != nil {
		s.srv.log.Debug("recipient refused", "session", s.conn.id, "rcpt", addr, "reason", r.reason)
		return s.fail("rcpt", r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.txn.active { // reset meanwhile
		return replyBadSequence.reply
	}
	s.txn.rcpts = append(s.txn.rcpts, addr)
	for _, a := range accounts {
		if !contains(s.txn.accounts, a) {
			s.txn.accounts = append(s.txn.accounts, a)
		}
	}
	return nil
}

// resolveRecipient decides at RCPT time where a message for addr goes, and
// refuses it if it cannot be stored: unknown, relay, forwarding outside,
// disabled or full. It first passes a read barrier, so the decision follows
// every account, alias and forwarding change acknowledged anywhere before
// the command (one made a moment ago through another node included); if
// the barrier fails, the answer is temporary.
func (s *session) resolveRecipient(ctx context.Context, addr string, authenticated bool, size int64) ([]string, *refusal) {
	if err := s.srv.store.barrier(ctx); err != nil {
		return nil, lookupReply(err)
	}
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	if !s.srv.store.isLocalDomain(ctx, domain) {
		if authenticated {
			return nil, replyOutboundUnavailable
		}
		return nil, replyRelayDenied(domain)
	}
	res, err := s.srv.store.resolve(ctx, addr)
	switch {
	case errors.Is(err, replication.ErrNoSuchAccount):
		return nil, replyNoSuchUser
	case errors.Is(err, replication.ErrInvalidAddress):
		return nil, replyBadRecipient
	case errors.Is(err, replication.ErrNoSuchDomain): // deleted meanwhile
		return nil, replyNoSuchUser
	case err != nil:
		return nil, lookupReply(err)
	}
	if len(res.External) > 0 {
		// Storing the local copies and dropping the forward would lose mail.
		return nil, replyExternalForward
	}
	var out []string
	for _, a := range res.Accounts {
		acct, err := s.srv.store.account(ctx, a)
		switch {
		case errors.Is(err, replication.ErrNoSuchAccount):
			continue // deleted meanwhile
		case err != nil:
			return nil, lookupReply(err)
		case acct.Disabled:
			continue
		case !fits(acct, size) && !s.fitsAfterAll(ctx, a, size):
			return nil, replyMailboxFull(s.srv.opts.QuotaPermanent, addr)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, replyDisabled
	}
	return out, nil
}

// fitsAfterAll checks a mailbox that looked full again after a full read
// barrier: usage is outside the addressing scope, and mail expunged through
// another node a moment ago may have made room. A full mailbox is rare
// enough to pay for it.
func (s *session) fitsAfterAll(ctx context.Context, account string, size int64) bool {
	if s.srv.store.fullBarrier(ctx) != nil {
		return false
	}
	acct, err := s.srv.store.account(ctx, account)
	return err == nil && fits(acct, size)
}

// fits reports whether a message of size bytes (0: unknown) fits in acct's
// quota. The state machine makes the final decision when it applies the
// delivery; this only lets a full mailbox be refused per recipient.
func fits(acct state.Account, size int64) bool {
	if acct.QuotaBytes > 0 && acct.UsedBytes+max(size, 1) > acct.QuotaBytes {
		return false
	}
	if acct.QuotaMessages > 0 && acct.UsedMessages+1 > acct.QuotaMessages {
		return false
	}
	return true
}

// ---- RSET / end ----------------------------------------------------------

func (s *session) Reset() {
	s.mu.Lock()
	s.txn = transaction{}
	s.mu.Unlock()
	s.conn.setInTxn(false)
}

func (s *session) Logout() error {
	s.Reset()
	// After STARTTLS the next session reports the new TLS conn; until then
	// a policy reply has nowhere safe to go.
	s.conn.setTop(nil)
	return nil
}

// ---- DATA / BDAT ---------------------------------------------------------

// Data receives the message and answers only once the store says it is
// durable on W replicas and committed: a 250 is a promise (DESIGN.md §1).
// The reply is returned as an *smtp.SMTPError even on success, so that the
// 250 carries the message ID.
func (s *session) Data(r io.Reader) error {
	s.conn.setInData(true)
	defer s.conn.setInData(false)
	_, bdat := r.(*io.PipeReader) // go-smtp feeds BDAT chunks through a pipe
	if !bdat {
		// After DATA: read the message ourselves (see data.go), and in
		// every case to its end, so the next command is read as one.
		dr, ok := takeOverData(r, s.srv.opts.MaxMessageSize)
		if !ok {
			s.srv.log.Error("smtp: go-smtp's DATA reader is not the one protocol/smtp/data.go knows; ending DATA the library's way")
		} else {
			defer func() { _ = dr.Finish() }()
			r = dr
		}
	}
	s.mu.Lock()
	txn := s.txn
	s.mu.Unlock()
	if !txn.active || len(txn.accounts) == 0 {
		return replyBadSequence.reply
	}
	if !s.srv.begin() {
		return replyShuttingDown.reply
	}
	defer s.srv.inflight.Done()

	received := time.Now()
	id := s.conn.nextMessageID()
	trace := s.traceHeaders(id, txn, received)
	ctx, cancel := context.WithCancel(s.srv.ctx)
	defer cancel()

	var ackStart time.Time
	var deadline *time.Timer
	var expired atomic.Bool
	body := newBodyReader(r, bodyRules{
		maxLine:     s.srv.opts.MaxLineLength,
		utf8Headers: txn.utf8 || s.srv.opts.Allow8BitHeaders,
		fixBare:     s.srv.opts.FixBareLineEndings,
	}, func(size int64) error {
		// The whole message is here: from now on the cluster has
		// DeliveryTimeout to make it durable.
		if bdat && s.conn.peerClosed() {
			// The last chunk ended early because the client went away
			// (for instance with a TLS close_notify): it is incomplete.
			return replyAborted
		}
		ackStart = time.Now()
		deadline = time.AfterFunc(s.srv.opts.DeliveryTimeout, func() {
			expired.Store(true)
			cancel()
		})
		return s.checkQuotas(ctx, txn.accounts, size+int64(len(trace)))
	})
	rcpts := make([]replication.Recipient, len(txn.accounts))
	for i, a := range txn.accounts {
		rcpts[i] = replication.Recipient{Account: a}
	}
	maxStored := s.srv.opts.MaxMessageSize + int64(len(trace))
	d, err := s.srv.store.deliver(ctx, io.MultiReader(strings.NewReader(trace), body), rcpts, received, maxStored)
	if deadline != nil {
		deadline.Stop()
	}
	if err == nil {
		err = s.checkResults(id, txn, d)
	}
	if err != nil {
		ref := s.srv.deliveryReply(err, body.SourceErr())
		switch {
		case s.srv.ctx.Err() != nil:
			ref = replyShuttingDown
		case expired.Load() && ref == replyInternal:
			ref = replyNoQuorum // the cluster did not make it durable in time
		}
		level := slogLevelFor(ref)
		s.srv.log.Log(context.Background(), level, "message refused", "session", s.conn.id, "id", id, "listener", s.mode.String(),
			"from", txn.from, "rcpts", len(txn.rcpts), "size", body.Size(), "reply", ref.reply.Code, "reason", ref.reason, "err", err)
		return s.fail("data", ref)
	}
	latency := time.Since(ackStart)
	s.srv.metrics.accepted.WithLabelValues(s.mode.String()).Inc()
	s.srv.metrics.bytes.WithLabelValues(s.mode.String()).Add(float64(d.Size))
	s.srv.metrics.ack.WithLabelValues(s.mode.String()).Observe(latency.Seconds())
	s.srv.log.Info("message accepted", "session", s.conn.id, "id", id, "listener", s.mode.String(), "from", txn.from,
		"rcpts", len(txn.rcpts), "accounts", len(txn.accounts), "size", d.Size, "blob", d.Blob.String(), "ack_ms", latency.Milliseconds())
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: enh(2, 0, 0), Message: "OK: stored on the cluster as " + id}
}

// checkQuotas runs once the size is known, before anything is committed:
// a recipient whose quota the message would break refuses the whole
// message, because one reply covers every recipient and a partial
// delivery could not be reported without losing or duplicating mail.
func (s *session) checkQuotas(ctx context.Context, accounts []string, size int64) error {
	for _, a := range accounts {
		acct, err := s.srv.store.account(ctx, a)
		if err != nil {
			continue // the state machine decides
		}
		if !acct.Disabled && !fits(acct, size) {
			return replyMailboxFull(s.srv.opts.QuotaPermanent, a)
		}
	}
	return nil
}

// checkResults turns per-recipient failures of a committed delivery into
// the one reply SMTP allows. All delivered: nil. None: the common refusal.
// Some: 451, so the sender retries (the recipients who already have the
// message may get it twice, which beats losing it for the others).
func (s *session) checkResults(id string, txn transaction, d replication.Delivered) error {
	var failed []*refusal
	for i, r := range d.Results {
		if err := r.Err(); err != nil {
			var ref *refusal
			switch {
			case errors.Is(err, replication.ErrQuotaExceeded):
				ref = replyMailboxFull(s.srv.opts.QuotaPermanent, txn.accounts[i])
			case errors.Is(err, replication.ErrNoSuchAccount):
				ref = replyNoSuchUser
			case errors.Is(err, replication.ErrAccountDisabled):
				ref = replyDisabled
			default:
				ref = replyInternal
			}
			failed = append(failed, ref)
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) < len(d.Results):
		s.srv.log.Warn("message delivered to some recipients only; asking the sender to retry", "id", id,
			"delivered", len(d.Results)-len(failed), "failed", len(failed))
		return replyPartial
	}
	for _, f := range failed[1:] {
		if f.reply.Code != failed[0].reply.Code {
			return replyPartial
		}
	}
	return failed[0]
}

func slogLevelFor(r *refusal) slog.Level {
	switch r.reason {
	case "internal", "no_quorum", "partial":
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// ---- helpers -------------------------------------------------------------

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validPath accepts a reverse path that is safe to write into a header:
// empty (the null sender) or local@domain without control characters.
func validPath(addr string) bool {
	if addr == "" {
		return true
	}
	if len(addr) > 512 || !strings.Contains(addr, "@") {
		return false
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

var replyBadSequence = refuse("bad_sequence", 503, enh(5, 5, 1), "Bad sequence of commands")
