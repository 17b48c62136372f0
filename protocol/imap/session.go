package imap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// session is one client connection. imapserver calls its methods one at a
// time from the connection's goroutine; only Idle runs on another goroutine.
// The connection goroutine waits for it, except when reading the client's
// DONE fails (a hang-up, an over-long line): then imapserver goes on (the
// next command, Poll, Close) while Idle is still returning. busy keeps
// those apart: every entry point (run, guard, Close) holds it.
type session struct {
	busy sync.Mutex

	srv    *Server
	store  mailStore
	conn   *imapserver.Conn
	wire   *guardConn // the connection's guard (nil in unit tests without one)
	remote net.Addr
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	account string // "" until logged in
	acctSub *replication.Subscription
	sel     *selected // nil unless a mailbox is selected
	// closing: an Expunge with a silent writer came, so the Unselect that
	// follows is a CLOSE.
	closing         bool
	pendingUnselect string // "UNSELECT" or "CLOSE" done, not yet counted
	ended           bool   // BYE was sent and the connection closed
}

var (
	_ imapserver.SessionIMAP4rev2      = (*session)(nil)
	_ imapserver.SessionSASL           = (*session)(nil)
	_ imapserver.SessionUnauthenticate = (*session)(nil)
	_ imapserver.SessionAppendLimit    = (*session)(nil)
	_ imapserver.SessionNamespace      = (*session)(nil)
	_ imapserver.SessionMove           = (*session)(nil)
	_ imapserver.Session               = (*session)(nil)
)

func (s *Server) newSession(c *imapserver.Conn) *session {
	ctx, cancel := context.WithCancel(s.ctx)
	remote := c.NetConn().RemoteAddr()
	sess := &session{
		srv:    s,
		store:  s.cfg.Store,
		conn:   c,
		remote: remote,
		log:    s.log.With("session", s.nextID.Add(1), "remote", remote.String()),
		ctx:    ctx,
		cancel: cancel,
	}
	if g, ok := c.NetConn().(*guardConn); ok {
		sess.wire = g
		g.authenticated = func() bool { return sess.account != "" }
	}
	s.sessions.Add(1)
	s.m.sessions.Inc()
	s.m.sessionsTotal.Inc()
	return sess
}

// run executes one command: it counts it, and turns a panic into the end of
// this connection only.
func (s *session) run(cmd string, fn func() error) (err error) {
	s.busy.Lock()
	defer s.busy.Unlock()
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			err = s.crashed(cmd, v)
		}
		s.srv.m.command(cmd, err, time.Since(start))
	}()
	return fn()
}

// guard is run without counting a command (Poll).
func (s *session) guard(what string, fn func() error) (err error) {
	s.busy.Lock()
	defer s.busy.Unlock()
	defer func() {
		if v := recover(); v != nil {
			err = s.crashed(what, v)
		}
	}()
	return fn()
}

func (s *session) crashed(what string, v any) error {
	s.srv.m.panics.Inc()
	s.log.Error("imap session panicked; closing its connection", "during", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	s.ended = true
	_ = s.conn.NetConn().Close()
	return errSessionEnded
}

// fail maps a store error to the client's reply and logs what is not a
// plain refusal.
func (s *session) fail(err error) error {
	out := storeError(err)
	var ie *imap.Error
	if errors.As(out, &ie) && (ie.Code == imap.ResponseCodeServerBug ||
		(ie.Code == imap.ResponseCodeUnavailable && !errors.Is(err, replication.ErrNoQuorum))) {
		s.log.Warn("imap command failed", "err", err)
	}
	return out
}

// Close ends the session (the connection is gone).
func (s *session) Close() error {
	s.busy.Lock()
	defer s.busy.Unlock()
	s.countUnselect()
	s.unselect()
	if s.acctSub != nil {
		s.acctSub.Close()
		s.acctSub = nil
	}
	s.cancel()
	s.srv.m.sessions.Dec()
	s.srv.sessions.Done()
	return nil
}

// bye tells the client the session ends and closes the connection.
func (s *session) bye(text string) error {
	if !s.ended {
		s.ended = true
		s.log.Info("ending imap session", "reason", text)
		_ = s.conn.Bye(text)
	}
	return errSessionEnded
}

// --- logging in ------------------------------------------------------------

func (s *session) Login(username, password string) error {
	return s.run("LOGIN", func() error { return s.login(username, password) })
}

func (s *session) AuthenticateMechanisms() []string { return []string{auth.MechPlain} }

func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if mech != auth.MechPlain {
		err := no("", "Unsupported SASL mechanism; use PLAIN")
		s.srv.m.command("AUTHENTICATE", err, 0)
		return nil, err
	}
	return imapSASL{auth.NewPlainServer(func(identity, username, password string) error {
		return s.run("AUTHENTICATE", func() error {
			if identity != "" && identity != username {
				return no(imap.ResponseCodeAuthorizationFailed, "Logging in as another user is not supported")
			}
			return s.login(username, password)
		})
	})}, nil
}

// imapSASL answers a PLAIN response protocol/auth cannot read with a NO
// the client can act on.
type imapSASL struct{ sasl.Server }

func (s imapSASL) Next(response []byte) ([]byte, bool, error) {
	ch, done, err := s.Server.Next(response)
	if errors.Is(err, auth.ErrMalformed) {
		err = no(imap.ResponseCodeAuthenticationFailed, "Malformed credentials")
	}
	return ch, done, err
}

// login goes through the shared login path of protocol/auth: throttle,
// attempt counted before the hash, capped concurrent checks, fail delay.
func (s *session) login(username, password string) error {
	var acct state.Account
	err := s.srv.cfg.Limiter.Login(s.ctx, s.remote, username, password, func(ctx context.Context) (bool, error) {
		var err error
		acct, err = s.store.Authenticate(ctx, username, password)
		if errors.Is(err, replication.ErrAuthFailed) {
			return false, nil
		}
		return err == nil, err
	})
	var throttled *auth.ThrottledError
	switch {
	case errors.As(err, &throttled):
		s.srv.m.logins.WithLabelValues("throttled").Inc()
		return no(imap.ResponseCodeUnavailable, fmt.Sprintf("Too many failed logins from your address; try again in %s", throttled.RetryAfter.Round(time.Second)))
	case errors.Is(err, auth.ErrFailed), errors.Is(err, auth.ErrMalformed):
		s.srv.m.logins.WithLabelValues("failed").Inc()
		s.log.Info("imap login failed", "user", username)
		return imapserver.ErrAuthFailed
	case errors.Is(err, auth.ErrBusy):
		s.srv.m.logins.WithLabelValues("unavailable").Inc()
		return no(imap.ResponseCodeUnavailable, "Too many logins being checked; try again later")
	case err != nil:
		s.srv.m.logins.WithLabelValues("unavailable").Inc()
		return s.fail(err)
	}
	s.srv.m.logins.WithLabelValues("ok").Inc()
	s.account = acct.Address
	s.acctSub = s.store.Feed().SubscribeAccount(acct.Address)
	s.log = s.log.With("account", acct.Address)
	return nil
}

func (s *session) Unauthenticate() error {
	return s.run("UNAUTHENTICATE", func() error {
		s.unselect()
		if s.acctSub != nil {
			s.acctSub.Close()
			s.acctSub = nil
		}
		s.account = ""
		return nil
	})
}

// --- small authenticated-state commands -------------------------------------

func (s *session) Namespace() (*imap.NamespaceData, error) {
	data := &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: separator}}}
	s.srv.m.command("NAMESPACE", nil, 0)
	return data, nil
}

// AppendLimit is advertised as APPENDLIMIT=n and enforced by imapserver
// before it asks for the literal.
func (s *session) AppendLimit() uint32 { return uint32(s.srv.opts.MaxMessageSize) }

// separator is the hierarchy separator, state.HierarchySeparator.
const separator = '/'

// rev2 reports whether the client enabled IMAP4rev2 (no \Recent, no RECENT).
func (s *session) rev2() bool { return s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) }

// watchAccount ends the session when its account was disabled or deleted.
func (s *session) watchAccount() error {
	if s.acctSub == nil || s.ended {
		return nil
	}
	events, overflow := s.acctSub.Next()
	check := overflow
	for _, e := range events {
		switch e := e.(type) {
		case state.AccountChanged:
			check = check || e.Account == s.account
		case state.AccountDeleted:
			if e.Account == s.account {
				return s.bye("Account was deleted")
			}
		}
	}
	if !check {
		return nil
	}
	acct, err := s.store.Account(s.ctx, s.account)
	switch {
	case errors.Is(err, replication.ErrNoSuchAccount):
		return s.bye("Account was deleted")
	case err == nil && acct.Disabled:
		return s.bye("Account was disabled")
	}
	return nil
}
