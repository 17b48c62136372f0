package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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

	"github.com/mailcluster/mailcluster/delivery"
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

// transaction is the envelope of the message being sent; the delivery
// holds its recipients.
type transaction struct {
	active bool
	from   string
	utf8   bool
	rcpts  []string // RCPT TO addresses as accepted, normalized
	d      *delivery.Delivery
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

// login checks credentials through the shared login path of protocol/auth.
func (s *session) login(identity, username, password string) error {
	ctx, cancel := s.lookupCtx()
	defer cancel()
	var account string
	err := s.srv.limiter.Login(ctx, s.remote, username, password, func(ctx context.Context) (bool, error) {
		if identity != "" && identity != username { // no proxy authorization
			return false, nil
		}
		var err error
		account, err = s.srv.store.authenticate(ctx, username, password)
		if errors.Is(err, replication.ErrAuthFailed) {
			return false, nil
		}
		return err == nil, err
	})
	var throttled *auth.ThrottledError
	switch {
	case err == nil:
		s.srv.metrics.auth.WithLabelValues("ok").Inc()
		s.mu.Lock()
		s.account = account
		s.mu.Unlock()
		s.srv.log.Debug("authenticated", "session", s.conn.id, "account", account)
		return nil
	case errors.As(err, &throttled):
		s.srv.metrics.auth.WithLabelValues("throttled").Inc()
		return s.fail("auth", replyLoginThrottled(roundUp(throttled.RetryAfter).String()))
	case errors.Is(err, auth.ErrMalformed):
		s.srv.metrics.auth.WithLabelValues("failed").Inc()
		return s.fail("auth", replyAuthMalformed)
	case errors.Is(err, auth.ErrBusy):
		s.srv.metrics.auth.WithLabelValues("busy").Inc()
		return s.fail("auth", replyLoginBusy)
	case errors.Is(err, auth.ErrFailed):
		s.srv.metrics.auth.WithLabelValues("failed").Inc()
		s.srv.log.Info("login failed", "session", s.conn.id, "remote", s.remote.String(), "user", username)
		return s.fail("auth", replyAuthFailed)
	}
	s.srv.metrics.auth.WithLabelValues("error").Inc()
	s.srv.log.Warn("login check failed", "session", s.conn.id, "err", err)
	return s.fail("auth", replyAuthUnavailable)
}

func roundUp(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}

// ---- MAIL FROM -----------------------------------------------------------

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.Reset()
	s.mu.Lock()
	account := s.account
	s.mu.Unlock()

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
	if s.mode == modeMX {
		if ok, wait := s.srv.msgRate.Allow(remoteIP(s.remote)); !ok {
			return s.fail("mail", refuse("message_rate", 451, enh(4, 7, 1),
				fmt.Sprintf("Too many messages from your address; try again in %d seconds", int(wait.Seconds())+1)))
		}
	}
	env := delivery.Envelope{Source: delivery.SourceMX, Sender: from,
		Client: delivery.Client{IP: remoteIP(s.remote), Helo: s.helo, TLS: s.tls != nil}}
	if s.mode != modeMX {
		env.Source, env.Account = delivery.SourceSubmission, account
	}
	if opts != nil {
		env.Size = opts.Size
		env.Ret, env.EnvID, env.UTF8 = string(opts.Return), opts.EnvelopeID, opts.UTF8
	}
	ctx, cancel := s.lookupCtx()
	defer cancel()
	d, err := s.srv.deliver.Begin(ctx, env)
	if err != nil {
		return s.fail("mail", s.srv.envelopeReply(err, from))
	}
	s.mu.Lock()
	s.txn = transaction{active: true, from: from, utf8: utf8, d: d}
	s.mu.Unlock()
	s.conn.setInTxn(true)
	return nil
}

// ---- RCPT TO -------------------------------------------------------------

// Rcpt hands the address to the delivery, which resolves it at once
// (after a read barrier) and refuses what cannot be stored in full.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	txn := s.txn
	s.mu.Unlock()
	if !txn.active {
		return s.fail("rcpt", replyBadSequence)
	}
	if !isASCII(to) && !txn.utf8 {
		return s.fail("rcpt", replyNeedUTF8Address)
	}
	ctx, cancel := s.lookupCtx()
	defer cancel()
	if err := txn.d.AddRecipientDSN(ctx, to, recipientDSN(opts)); err != nil {
		r := s.srv.envelopeReply(err, to)
		s.srv.log.Debug("recipient refused", "session", s.conn.id, "rcpt", to, "reason", r.reason)
		return s.fail("rcpt", r)
	}
	rcpts := txn.d.Recipients()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.txn.d != txn.d { // reset meanwhile
		return replyBadSequence.reply
	}
	s.txn.rcpts = rcpts
	return nil
}

// recipientDSN is the DSN request of one RCPT (RFC 3461 NOTIFY and ORCPT).
func recipientDSN(opts *gosmtp.RcptOptions) delivery.RecipientDSN {
	var dsn delivery.RecipientDSN
	if opts == nil {
		return dsn
	}
	for _, n := range opts.Notify {
		switch n {
		case gosmtp.DSNNotifyNever:
			dsn.Notify |= state.NotifyNever
		case gosmtp.DSNNotifySuccess:
			dsn.Notify |= state.NotifySuccess
		case gosmtp.DSNNotifyFailure:
			dsn.Notify |= state.NotifyFailure
		case gosmtp.DSNNotifyDelayed:
			dsn.Notify |= state.NotifyDelay
		}
	}
	if opts.OriginalRecipient != "" {
		typ := string(opts.OriginalRecipientType)
		if typ == "" {
			typ = "rfc822"
		}
		dsn.ORCPT = typ + ";" + opts.OriginalRecipient
	}
	return dsn
}

// ---- RSET / end ----------------------------------------------------------

func (s *session) Reset() {
	s.mu.Lock()
	if s.txn.d != nil {
		s.txn.d.Abort()
	}
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
	if !txn.active || len(txn.rcpts) == 0 {
		return replyBadSequence.reply
	}
	if !s.srv.begin() {
		return replyShuttingDown.reply
	}
	// Done once the reply is out: Close waits for it before closing
	// the connection under it.
	defer s.conn.afterReply(s.srv.inflight.Done)

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
	}, func(int64) error {
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
		return nil
	})
	maxStored := s.srv.opts.MaxMessageSize + int64(len(trace))
	var res delivery.Result
	err := txn.d.Body(ctx, io.MultiReader(strings.NewReader(trace), body), maxStored)
	if err == nil {
		res, err = txn.d.Commit(ctx)
	}
	if deadline != nil {
		deadline.Stop()
	}
	if err != nil {
		ref := s.srv.deliveryReply(err, body.SourceErr())
		switch {
		case s.srv.ctx.Err() != nil && ref != replyOutcomeUnknown:
			// Never over an unknown outcome: the message may be stored,
			// and "shutting down, retry" would have it sent twice.
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
	s.srv.metrics.bytes.WithLabelValues(s.mode.String()).Add(float64(res.Size))
	s.srv.metrics.ack.WithLabelValues(s.mode.String()).Observe(latency.Seconds())
	s.srv.log.Info("message accepted", "session", s.conn.id, "id", id, "listener", s.mode.String(), "from", txn.from,
		"rcpts", len(txn.rcpts), "accounts", len(txn.d.Accounts()), "size", res.Size, "blob", res.Blob.String(), "ack_ms", latency.Milliseconds())
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: enh(2, 0, 0), Message: "OK: stored on the cluster as " + id}
}

func slogLevelFor(r *refusal) slog.Level {
	switch r.reason {
	case "internal", "no_quorum", "partial":
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// ---- helpers -------------------------------------------------------------

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

// remoteIP is the client's IP address, nil if remote is not an IP
// endpoint.
func remoteIP(remote net.Addr) net.IP {
	if tcp, ok := remote.(*net.TCPAddr); ok {
		if v4 := tcp.IP.To4(); v4 != nil {
			return v4
		}
		return tcp.IP
	}
	return nil
}
