package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// hostError is a failure of one host before a transaction started: the
// next address or MX is tried, and the last one is the Send's result.
type hostError struct{ o outcome }

func (e *hostError) Error() string { return e.o.text }

// errRetryPlain: opportunistic TLS failed in the handshake; the address is
// dialled again without STARTTLS.
var errRetryPlain = errors.New("outbound: TLS handshake failed, retry without TLS")

// session is an open SMTP connection to one host, ready for MAIL.
type session struct {
	c        *smtp.Client
	raw      net.Conn // the TCP connection
	conn     net.Conn // what SMTP is spoken over (TLS or raw)
	host     string
	addr     string
	tls      bool
	verified bool // PKIX- or DANE-verified TLS
	timer    *time.Timer

	mu   sync.Mutex
	stop func() bool // the ctx watcher of the Send using it
}

// rcptMax is the remote's LIMITS RCPTMAX (RFC 9422), 0 if none.
func (s *session) rcptMax() int {
	ok, v := s.c.Extension("LIMITS")
	if !ok {
		return 0
	}
	for _, f := range strings.Fields(v) {
		if k, n, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "RCPTMAX") {
			if x, err := strconv.Atoi(n); err == nil && x > 0 {
				return x
			}
		}
	}
	return 0
}

// bind closes the connection when ctx ends, for the Send using it.
func (s *session) bind(ctx context.Context) {
	s.mu.Lock()
	s.stop = context.AfterFunc(ctx, func() { s.raw.Close() })
	s.mu.Unlock()
}

// unbind stops the watcher; false if it already fired (the conn is closed).
func (s *session) unbind() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil {
		return true
	}
	ok := s.stop()
	s.stop = nil
	return ok
}

func (s *session) close() {
	s.unbind()
	s.raw.Close()
}

// quit sends QUIT and closes without waiting long: an idle connection is
// given up on a timer or at Close, which must not hang on a dead remote.
func (s *session) quit() {
	s.unbind()
	s.conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := s.conn.Write([]byte("QUIT\r\n")); err == nil {
		var buf [512]byte
		s.conn.Read(buf[:]) // the 221, if it comes at once
	}
	s.raw.Close()
}

// blockConn sets a write deadline before every write: the data block
// timeout of RFC 5321 §4.5.3.2.
type blockConn struct {
	net.Conn
	timeout time.Duration
	read    int64 // bytes read since the last write: one reply's worth
}

// maxReplyBytes bounds what a remote server may send us in answer to one
// command: go-smtp (net/textproto) reads a multi-line reply whole, with no
// limit of its own, so an endless "220-…" would grow without bound.
const maxReplyBytes = 1 << 20

var errReplyTooLong = errors.New("the remote server's reply is too long")

func (b *blockConn) Write(p []byte) (int, error) {
	b.Conn.SetWriteDeadline(time.Now().Add(b.timeout))
	b.read = 0
	return b.Conn.Write(p)
}

func (b *blockConn) Read(p []byte) (int, error) {
	if b.read >= maxReplyBytes {
		return 0, errReplyTooLong
	}
	p = p[:min(int64(len(p)), maxReplyBytes-b.read)]
	n, err := b.Conn.Read(p)
	b.read += int64(n)
	return n, err
}

// greetedConn hands go-smtp a greeting already read by connect (which did
// the greeting, EHLO and STARTTLS itself), then the real connection.
type greetedConn struct {
	net.Conn
	pending []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// connect dials t at ip and makes the session ready for MAIL: greeting,
// EHLO, STARTTLS as sec demands (plain: never), EHLO again, relay AUTH.
func (c *Client) connect(ctx context.Context, t target, ip net.IP, sec security, plain bool) (*session, error) {
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(t.port))
	where := fmt.Sprintf("%s [%s]", t.host, ip)
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	raw, err := c.cfg.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, &hostError{temporary(451, "4.4.1", t.host, "cannot connect to %s: %v", where, err)}
	}
	s := &session{raw: raw, host: t.host, addr: addr}
	s.bind(ctx)
	fail := func(o outcome) (*session, error) {
		s.close()
		return nil, &hostError{o}
	}
	var conn net.Conn = &blockConn{Conn: raw, timeout: c.cfg.DataBlockTimeout}
	if t.implicitTLS {
		tc, verified, err := c.handshake(ctx, conn, t, sec)
		if err != nil {
			return fail(temporary(451, "4.7.5", t.host, "TLS with %s failed: %v", where, err))
		}
		conn, s.tls, s.verified = tc, true, verified
	}
	br := bufio.NewReader(conn)
	brOn := conn // what br reads from (STARTTLS replaces conn below)
	tp := textproto.NewReader(br)
	raw.SetDeadline(time.Now().Add(c.cfg.GreetingTimeout))
	if _, _, err := tp.ReadResponse(220); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return fail(temporary(451, "4.4.2", t.host, "%s refused the connection: %d %s", where, te.Code, te.Msg))
		}
		return fail(temporary(451, "4.4.2", t.host, "no greeting from %s: %v", where, err))
	}
	wantTLS := !s.tls && (sec.requireTLS || (!plain && c.cfg.TLS != TLSNone))
	if wantTLS {
		raw.SetDeadline(time.Now().Add(c.cfg.CommandTimeout))
		ext, err := ehlo(conn, tp, c.cfg.Hostname)
		if err != nil {
			var te *textproto.Error
			if !errors.As(err, &te) || sec.requireTLS {
				return fail(temporary(451, "4.4.2", t.host, "EHLO at %s failed: %v", where, err))
			}
			// EHLO refused: go-smtp falls back to HELO, without TLS.
		} else if _, ok := ext["STARTTLS"]; !ok {
			if sec.requireTLS {
				return fail(temporary(451, "4.7.5", t.host, "%s does not offer STARTTLS, which %s requires", where, sec.reason))
			}
		} else {
			if _, err := conn.Write([]byte("STARTTLS\r\n")); err != nil {
				return fail(temporary(451, "4.4.2", t.host, "STARTTLS at %s: %v", where, err))
			}
			if _, _, err := tp.ReadResponse(220); err != nil {
				if sec.requireTLS {
					return fail(temporary(451, "4.7.5", t.host, "%s refused STARTTLS (%v), which %s requires", where, err, sec.reason))
				}
				// Refused: go on without TLS (go-smtp says EHLO again).
			} else {
				if br.Buffered() > 0 {
					// Bytes after the 220 would be read as if they came over TLS.
					return fail(temporary(451, "4.7.5", t.host, "%s sent data after its STARTTLS reply", where))
				}
				tc, verified, err := c.handshake(ctx, conn, t, sec)
				if err != nil {
					if sec.requireTLS {
						return fail(temporary(451, "4.7.5", t.host, "TLS with %s failed: %v (required by %s)", where, err, sec.reason))
					}
					s.close()
					return nil, errRetryPlain
				}
				conn, s.tls, s.verified = tc, true, verified
			}
		}
	}
	if br.Buffered() > 0 && conn == brOn {
		// Bytes read ahead on the same stream: hand them on.
		pending, _ := br.Peek(br.Buffered())
		conn = &greetedConn{Conn: conn, pending: append([]byte(nil), pending...)}
	}
	raw.SetDeadline(time.Time{})
	if !s.tls && sec.stsTesting {
		c.log.Warn("outbound: MTA-STS testing: no TLS, an enforced policy would refuse", "host", t.host)
	}
	s.conn = conn
	sc := smtp.NewClient(&greetedConn{Conn: conn, pending: []byte("220 " + t.host + "\r\n")})
	sc.CommandTimeout = c.cfg.CommandTimeout
	sc.SubmissionTimeout = c.cfg.DataEndTimeout
	s.c = sc
	if err := sc.Hello(c.cfg.Hostname); err != nil {
		o, _ := fromReply(err, t.host, "EHLO")
		return fail(hostLevel(o, "EHLO refused by "+where+": "))
	}
	if sec.auth {
		if !s.verified {
			return fail(temporary(451, "4.7.5", t.host, "relay %s: no verified TLS, so no AUTH", where))
		}
		if !sc.SupportsAuth("PLAIN") {
			return fail(temporary(451, "4.7.8", t.host, "relay %s does not offer AUTH PLAIN", where))
		}
		if err := sc.Auth(sasl.NewPlainClient("", c.cfg.RelayUsername, c.cfg.RelayPassword)); err != nil {
			o, _ := fromReply(err, t.host, "AUTH")
			// A configuration problem, not the message's: temporary.
			return fail(hostLevel(o, "relay authentication failed: "))
		}
	}
	return s, nil
}

// hostLevel turns a remote reply outside a transaction (EHLO, AUTH) into
// a temporary outcome that quotes it: it says nothing about the message.
func hostLevel(o outcome, prefix string) outcome {
	if o.code >= 500 {
		o.text = fmt.Sprintf("%d %s %s", o.code, o.enhanced, o.text)
		o.code, o.enhanced = 451, "4"+o.enhanced[1:]
	}
	o.permanent = false
	o.text = prefix + o.text
	return o
}

// ehlo sends EHLO and returns the extensions offered.
func ehlo(w net.Conn, tp *textproto.Reader, name string) (map[string]string, error) {
	if _, err := w.Write([]byte("EHLO " + name + "\r\n")); err != nil {
		return nil, err
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		return nil, err
	}
	ext := map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

// handshake runs the TLS handshake as sec demands; verified reports a
// certificate checked by PKIX or DANE.
func (c *Client) handshake(ctx context.Context, conn net.Conn, t target, sec security) (*tls.Conn, bool, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.cfg.RootCAs}
	if net.ParseIP(t.host) == nil {
		cfg.ServerName = t.host // SNI; RFC 7672 §8.1
	}
	verified := false
	switch {
	case sec.dane != nil:
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return daneVerify(sec.dane, cs, sec.names) }
		verified = true
	case sec.verify:
		if cfg.ServerName == "" {
			cfg.ServerName = t.host
		}
		verified = true
	default:
		cfg.InsecureSkipVerify = true
		if sec.stsTesting {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := c.verifyPKIX(cs, t.host); err != nil {
					c.log.Warn("outbound: MTA-STS testing: certificate would be refused", "host", t.host, "err", err)
				}
				return nil
			}
		}
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, false, err
	}
	return tc, verified, nil
}

func (c *Client) verifyPKIX(cs tls.ConnectionState, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: c.cfg.RootCAs, Intermediates: inter})
	return err
}

// dial connects to addr within the connect timeout.
func (c *Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	return c.cfg.DialContext(ctx, "tcp", addr)
}
