package simnet

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// DefaultSinkHost is the name the sink greets with; point MX records at it
// (the wildcard's A record sends it to 127.0.0.1).
const DefaultSinkHost = "sink.simnet.test"

// SinkOptions shapes a Sink.
type SinkOptions struct {
	Addr     string      // loopback host:port; "" picks a free port on 127.0.0.1
	Hostname string      // greeting and EHLO name; default DefaultSinkHost
	TLS      *tls.Config // offer STARTTLS with this certificate; nil: no STARTTLS
	// Dir, when set, receives every stored message as <time>-<n>.eml (trace
	// header fields first, then the message as received).
	Dir string
	// OnMessage is called after each message is stored (not under a lock).
	OnMessage func(Message)
	// MaxMessageBytes is advertised as SIZE and enforced; 0: 64 MiB.
	MaxMessageBytes int64
	// NoSMTPUTF8 and NoDSN leave those extensions out of EHLO (8BITMIME
	// is always offered: go-smtp hard-codes it).
	NoSMTPUTF8, NoDSN bool
	// Users, when set, makes the sink a relay that requires AUTH PLAIN
	// with one of these user → password pairs before MAIL.
	Users map[string]string
	// Listener, when set, is served instead of listening on Addr, wherever
	// it listens: the escape from the loopback rule for a process that is
	// itself the outside world of a test network (the chaos suite's outside
	// container). The sink closes it.
	Listener net.Listener
}

// Message is one message the sink answered 250 to (or, in Abandoned, one
// whose client vanished while its DATA reply was held).
type Message struct {
	N          int // 1, 2, … in the order the sink stored them
	From       string
	To         []string
	Rcpts      []Rcpt
	Data       []byte // as received, without the sink's trace fields
	TLS        bool   // the transaction ran over STARTTLS
	TLSVersion uint16
	Helo       string
	RemoteAddr string
	User       string // the AUTH identity, "" without AUTH
	Size       int64  // MAIL SIZE=, 0 if not given
	Body       string // MAIL BODY= ("7BIT", "8BITMIME", "BINARYMIME"), "" if not given
	UTF8       bool   // MAIL SMTPUTF8
	Ret        string // DSN RET= ("FULL", "HDRS"), "" if not given
	EnvID      string // DSN ENVID=
	Received   time.Time
	File       string // the .eml written, "" without Dir
}

// Rcpt is one accepted recipient with its DSN parameters.
type Rcpt struct {
	Addr   string
	Notify []string // "NEVER", "SUCCESS", "FAILURE", "DELAY"; nil if not given
	ORCPT  string   // "RFC822;addr" (addr-type as sent), "" if not given
}

// Reply programs the sink's answer for one recipient.
type Reply struct {
	Code     int    // 4xx or 5xx
	Enhanced string // "4.2.0"; "" derives X.0.0 from Code
	Text     string
	// AtData answers the DATA of a transaction holding this recipient with
	// this reply (nothing is stored) instead of refusing the RCPT.
	AtData bool
	// Times is how many transactions get this reply before the sink
	// accepts again; 0 means every one.
	Times int
}

// Sink is an SMTP server on loopback standing in for every remote MX. It
// keeps every message in memory (and in Dir), can refuse recipients, can
// hold its DATA reply, and counts the transactions in progress per
// recipient so a test can prove none ran twice at once.
type Sink struct {
	opts   SinkOptions
	srv    *smtp.Server
	ln     net.Listener
	closed chan struct{}
	done   chan struct{}

	mu          sync.Mutex
	msgs        []Message
	abandoned   []Message
	replies     map[string]*Reply
	inProgress  map[string]int
	maxProgress map[string]int
	hold        chan struct{} // non-nil while DATA replies are held
	held        int
	n           int
}

// NewSink starts a sink. It serves until Close.
func NewSink(opts SinkOptions) (*Sink, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Listener == nil {
		if err := checkLoopback(opts.Addr); err != nil {
			return nil, err
		}
	}
	if opts.Hostname == "" {
		opts.Hostname = DefaultSinkHost
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("simnet sink: %w", err)
		}
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Addr); err != nil {
			return nil, fmt.Errorf("simnet sink: %w", err)
		}
	}
	s := &Sink{
		opts:        opts,
		ln:          ln,
		closed:      make(chan struct{}),
		done:        make(chan struct{}),
		replies:     make(map[string]*Reply),
		inProgress:  make(map[string]int),
		maxProgress: make(map[string]int),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Hostname
	srv.TLSConfig = opts.TLS
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = 1000
	srv.AllowInsecureAuth = true // loopback only
	srv.EnableSMTPUTF8 = !opts.NoSMTPUTF8
	srv.EnableDSN = !opts.NoDSN
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv = srv
	go func() {
		defer close(s.done)
		_ = srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Port is the sink's port: what smtp_remote_port must be for nodes to
// reach it at the MX the DNS names.
func (s *Sink) Port() int { return portOf(s.Addr()) }

// Host is the name the sink greets with (DefaultSinkHost unless set).
func (s *Sink) Host() string { return s.opts.Hostname }

// Close stops the sink; held transactions end without a reply.
func (s *Sink) Close() error {
	select {
	case <-s.closed:
		return nil
	default:
	}
	close(s.closed)
	err := s.srv.Close()
	<-s.done
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Messages returns every stored message, in order.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// MessagesTo returns the stored messages with rcpt among their recipients.
func (s *Sink) MessagesTo(rcpt string) []Message {
	key := rcptKey(rcpt)
	var out []Message
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if rcptKey(to) == key {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// Abandoned returns transactions whose client went away while the sink
// held its reply to their DATA (never stored, never acknowledged).
func (s *Sink) Abandoned() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.abandoned...)
}

// SetReply programs the answer for rcpt (case-insensitive).
func (s *Sink) SetReply(rcpt string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies[rcptKey(rcpt)] = &r
}

// ClearReply makes the sink accept rcpt again.
func (s *Sink) ClearReply(rcpt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.replies, rcptKey(rcpt))
}

// Hold makes every DATA that ends from now on wait for its reply until
// Release (or until its client disconnects: the transaction is then
// abandoned, nothing stored). Calling Hold while holding changes nothing.
func (s *Sink) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// Release answers every held DATA and stops holding.
func (s *Sink) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Held is how many transactions wait for a held DATA reply now.
func (s *Sink) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// InProgress is how many transactions hold rcpt now (from its accepted
// RCPT to the DATA reply, RSET or disconnect).
func (s *Sink) InProgress(rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inProgress[rcptKey(rcpt)]
}

// MaxInProgress is the most transactions that ever held rcpt at once: 1
// for a recipient delivered without overlap.
func (s *Sink) MaxInProgress(rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxProgress[rcptKey(rcpt)]
}

// Overlapped lists every recipient that two transactions ever held at once.
func (s *Sink) Overlapped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for r, n := range s.maxProgress {
		if n > 1 {
			out = append(out, r)
		}
	}
	return out
}

func rcptKey(addr string) string { return strings.ToLower(strings.Trim(strings.TrimSpace(addr), "<>")) }

// takeReply returns the programmed reply for rcpt at this stage, using up
// one of its Times. The caller holds s.mu.
func (s *Sink) takeReply(rcpt string, atData bool) *smtp.SMTPError {
	r := s.replies[rcptKey(rcpt)]
	if r == nil || r.AtData != atData {
		return nil
	}
	if r.Times > 0 {
		r.Times--
		if r.Times == 0 {
			delete(s.replies, rcptKey(rcpt))
		}
	}
	return replyError(*r)
}

func replyError(r Reply) *smtp.SMTPError {
	enh := smtp.EnhancedCode{r.Code / 100, 0, 0}
	if parts := strings.Split(r.Enhanced, "."); len(parts) == 3 {
		for i, p := range parts {
			enh[i], _ = strconv.Atoi(p)
		}
	}
	text := r.Text
	if text == "" {
		text = "refused by the simnet sink"
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: enh, Message: text}
}

type sinkSession struct {
	s    *Sink
	conn *smtp.Conn
	user string

	from  string
	mail  smtp.MailOptions
	rcpts []Rcpt
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &sinkSession{s: s, conn: c}, nil
}

func (ss *sinkSession) AuthMechanisms() []string {
	if len(ss.s.opts.Users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	if len(ss.s.opts.Users) == 0 || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return smtp.ErrAuthFailed
		}
		if want, ok := ss.s.opts.Users[username]; !ok || want != password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	if len(ss.s.opts.Users) > 0 && ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	ss.end()
	ss.from = from
	if opts != nil {
		ss.mail = *opts
	}
	return nil
}

func (ss *sinkSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.takeReply(to, false); err != nil {
		return err
	}
	r := Rcpt{Addr: to}
	if opts != nil {
		for _, n := range opts.Notify {
			r.Notify = append(r.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			r.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	ss.rcpts = append(ss.rcpts, r)
	k := rcptKey(to)
	s.inProgress[k]++
	s.maxProgress[k] = max(s.maxProgress[k], s.inProgress[k])
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	m := ss.message(data)

	s.mu.Lock()
	var refuse *smtp.SMTPError
	for _, rc := range ss.rcpts {
		if e := s.takeReply(rc.Addr, true); e != nil && refuse == nil {
			refuse = e
		}
	}
	hold := s.hold
	if hold != nil {
		s.held++
	}
	s.mu.Unlock()

	if hold != nil {
		gone := ss.waitHold(hold)
		s.mu.Lock()
		s.held--
		if gone {
			s.abandoned = append(s.abandoned, m)
		}
		s.mu.Unlock()
		if gone {
			ss.end()
			return errors.New("client went away")
		}
	}
	if refuse != nil {
		ss.end()
		return refuse
	}
	if err := s.store(&m); err != nil {
		ss.end()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sink could not store: " + err.Error()}
	}
	ss.end()
	if s.opts.OnMessage != nil {
		s.opts.OnMessage(m)
	}
	return nil
}

// waitHold waits for the hold to be released; it reports true when the
// client disconnected (or the sink closed) first.
func (ss *sinkSession) waitHold(hold chan struct{}) bool {
	raw := ss.conn.Conn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	// go-smtp sets a read deadline before each command line it reads; none
	// is needed while we wait, and peeking needs the socket readable.
	_ = raw.SetReadDeadline(time.Time{})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-hold:
			return false
		case <-ss.s.closed:
			return true
		case <-tick.C:
			if peerClosed(raw) {
				return true
			}
		}
	}
}

func (ss *sinkSession) message(data []byte) Message {
	m := Message{
		From:       ss.from,
		Rcpts:      append([]Rcpt(nil), ss.rcpts...),
		Data:       data,
		Helo:       ss.conn.Hostname(),
		RemoteAddr: ss.conn.Conn().RemoteAddr().String(),
		User:       ss.user,
		Size:       ss.mail.Size,
		Body:       string(ss.mail.Body),
		UTF8:       ss.mail.UTF8,
		Ret:        string(ss.mail.Return),
		EnvID:      ss.mail.EnvelopeID,
		Received:   time.Now(),
	}
	for _, r := range ss.rcpts {
		m.To = append(m.To, r.Addr)
	}
	if st, ok := ss.conn.TLSConnectionState(); ok {
		m.TLS, m.TLSVersion = true, st.Version
	}
	return m
}

// store numbers m, writes its file (when Dir is set) and keeps it.
func (s *Sink) store(m *Message) error {
	s.mu.Lock()
	s.n++
	m.N = s.n
	s.mu.Unlock()
	if s.opts.Dir != "" {
		path, err := s.writeFile(m)
		if err != nil {
			return err
		}
		m.File = path
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, *m)
	s.mu.Unlock()
	return nil
}

func (s *Sink) writeFile(m *Message) (string, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", m.From)
	for _, to := range m.To {
		fmt.Fprintf(&b, "Delivered-To: %s\r\n", to)
	}
	with := "ESMTP"
	if m.TLS {
		with = "ESMTPS"
	}
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n\tby %s (simnet sink) with %s;\r\n\t%s\r\n",
		m.Helo, m.RemoteAddr, s.opts.Hostname, with, m.Received.Format(time.RFC1123Z))
	b.Write(m.Data)
	stamp := m.Received.UTC().Format("20060102T150405Z")
	for n := m.N; ; n++ {
		path := filepath.Join(s.opts.Dir, stamp+"-"+strconv.Itoa(n)+".eml")
		tmp := filepath.Join(s.opts.Dir, "."+stamp+"-"+strconv.Itoa(n)+".tmp")
		if _, err := os.Stat(path); err == nil {
			continue // a file from an earlier run of the sink
		}
		if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
			return "", err
		}
		return path, os.Rename(tmp, path)
	}
}

func (ss *sinkSession) Reset() { ss.end() }

func (ss *sinkSession) Logout() error {
	ss.end()
	return nil
}

// end closes the current transaction: its recipients are no longer in
// progress.
func (ss *sinkSession) end() {
	s := ss.s
	s.mu.Lock()
	for _, r := range ss.rcpts {
		k := rcptKey(r.Addr)
		if s.inProgress[k]--; s.inProgress[k] <= 0 {
			delete(s.inProgress, k)
		}
	}
	s.mu.Unlock()
	ss.rcpts, ss.from, ss.mail = nil, "", smtp.MailOptions{}
}
