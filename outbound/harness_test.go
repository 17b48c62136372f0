package outbound

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const testPort = 2525

// fakeDNS is the tests' Resolver: answers from tables, ErrNotFound for the
// rest. It never touches the network.
type fakeDNS struct {
	mu      sync.Mutex
	mx      map[string][]MX
	mxErr   map[string]error
	ip      map[string][]net.IP
	txt     map[string][]string
	tlsa    map[string][]TLSA
	tlsaAD  map[string]bool
	queries []string
}

func newDNS() *fakeDNS {
	return &fakeDNS{mx: map[string][]MX{}, mxErr: map[string]error{}, ip: map[string][]net.IP{},
		txt: map[string][]string{}, tlsa: map[string][]TLSA{}, tlsaAD: map[string]bool{}}
}

func (d *fakeDNS) setMX(domain string, mxs ...MX) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mx[domain] = mxs
}

func (d *fakeDNS) setIP(host string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range ips {
		d.ip[host] = append(d.ip[host], net.ParseIP(s))
	}
}

func (d *fakeDNS) setTXT(name string, txt ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[name] = txt
}

func (d *fakeDNS) setTLSA(name string, authentic bool, recs ...TLSA) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tlsa[name], d.tlsaAD[name] = recs, authentic
}

func (d *fakeDNS) log(q string) {
	d.mu.Lock()
	d.queries = append(d.queries, q)
	d.mu.Unlock()
}

func (d *fakeDNS) asked(prefix string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queries {
		if strings.HasPrefix(q, prefix) {
			return true
		}
	}
	return false
}

func (d *fakeDNS) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	d.log("MX " + domain)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.mxErr[domain]; err != nil {
		return nil, err
	}
	if mx, ok := d.mx[domain]; ok {
		return append([]MX(nil), mx...), nil
	}
	return nil, fmt.Errorf("MX %s: %w", domain, ErrNotFound)
}

func (d *fakeDNS) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	d.log("IP " + host)
	d.mu.Lock()
	defer d.mu.Unlock()
	if ips, ok := d.ip[host]; ok {
		return append([]net.IP(nil), ips...), nil
	}
	return nil, fmt.Errorf("IP %s: %w", host, ErrNotFound)
}

func (d *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	d.log("TXT " + name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.txt[name]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("TXT %s: %w", name, ErrNotFound)
}

func (d *fakeDNS) LookupTLSA(ctx context.Context, name string) ([]TLSA, bool, error) {
	d.log("TLSA " + name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.tlsa[name]; ok {
		return t, d.tlsaAD[name], nil
	}
	return nil, false, fmt.Errorf("TLSA %s: %w", name, ErrNotFound)
}

// testNet maps the addresses the client dials (from fakeDNS) to loopback
// listeners, records the dials, and fails the test on any other address.
type testNet struct {
	t     testing.TB
	mu    sync.Mutex
	route map[string]string
	dials []string
}

func newNet(t testing.TB) *testNet { return &testNet{t: t, route: map[string]string{}} }

func (n *testNet) set(addr, real string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.route[addr] = real
}

func (n *testNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	real, ok := n.route[addr]
	n.dials = append(n.dials, addr)
	n.mu.Unlock()
	if !ok {
		n.t.Errorf("dial to unexpected address %s", addr)
		return nil, errors.New("test: no route to " + addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (n *testNet) dialed() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.dials...)
}

// refusingAddr is a loopback address where nothing listens.
func refusingAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// testCA issues certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "outbound test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a leaf for names signed by the CA (ca nil: self-signed),
// served with the CA in the chain.
func issue(t testing.TB, ca *testCA, names ...string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	c := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	if ca != nil {
		c.Certificate = append(c.Certificate, ca.cert.Raw)
	}
	return c
}

func spkiSHA256(c tls.Certificate) []byte {
	h := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return h[:]
}

// gotMsg is one message a test server stored.
type gotMsg struct {
	from  string
	mail  smtp.MailOptions
	rcpts []string
	ropts []smtp.RcptOptions
	data  string
	tls   bool
	user  string
}

// mxServer is a go-smtp server on loopback that records what it gets.
type mxServer struct {
	t    testing.TB
	srv  *smtp.Server
	addr string

	mu         sync.Mutex
	conns      int
	mails      int
	resets     int
	msgs       []gotMsg
	dataErrs   int
	rcptReply  map[string]*smtp.SMTPError
	dataReply  *smtp.SMTPError
	hold       chan struct{} // non-nil: Data waits for it to close
	inData     int
	maxInData  int
	user       string
	pass       string
	implicit   bool // TLS from the first byte (port 465 style)
	txLimit    int  // >0: 452 4.5.3 past this many recipients, not advertised
	replies452 int
}

type srvOpt func(*mxServer)

func withTLS(c tls.Certificate) srvOpt {
	return func(m *mxServer) { m.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c}} }
}
func withUTF8() srvOpt           { return func(m *mxServer) { m.srv.EnableSMTPUTF8 = true } }
func withDSN() srvOpt            { return func(m *mxServer) { m.srv.EnableDSN = true } }
func withMaxSize(n int64) srvOpt { return func(m *mxServer) { m.srv.MaxMessageBytes = n } }
func withImplicitTLS(c tls.Certificate) srvOpt {
	return func(m *mxServer) {
		m.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c}}
		m.implicit = true
	}
}
func withAuth(user, pass string) srvOpt {
	return func(m *mxServer) { m.user, m.pass = user, pass }
}

type countingListener struct {
	net.Listener
	m *mxServer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.m.mu.Lock()
		l.m.conns++
		l.m.mu.Unlock()
		c = sniffConn{c, l.m}
	}
	return c, err
}

// sniffConn counts the 452 replies the server writes (go-smtp's own
// recipient limit answers without asking the session).
type sniffConn struct {
	net.Conn
	m *mxServer
}

func (c sniffConn) Write(p []byte) (int, error) {
	if strings.HasPrefix(string(p), "452 ") {
		c.m.mu.Lock()
		c.m.replies452++
		c.m.mu.Unlock()
	}
	return c.Conn.Write(p)
}

func newMX(t testing.TB, opts ...srvOpt) *mxServer {
	m := &mxServer{t: t, rcptReply: map[string]*smtp.SMTPError{}}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		s := &mxSession{m: m}
		s.cur.tls = isTLS
		if m.user != "" {
			return &authSession{mxSession: s}, nil
		}
		return s, nil
	}))
	m.srv.Domain = "mx.test"
	m.srv.ReadTimeout = 30 * time.Second
	m.srv.WriteTimeout = 30 * time.Second
	for _, o := range opts {
		o(m)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = l.Addr().String()
	var sl net.Listener = countingListener{l, m}
	if m.implicit {
		sl = tls.NewListener(sl, m.srv.TLSConfig)
	}
	go m.srv.Serve(sl)
	t.Cleanup(func() {
		m.mu.Lock()
		if m.hold != nil {
			select {
			case <-m.hold:
			default:
				close(m.hold)
			}
		}
		m.mu.Unlock()
		m.srv.Close()
	})
	return m
}

func (m *mxServer) stats() (conns, mails int, msgs []gotMsg) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns, m.mails, append([]gotMsg(nil), m.msgs...)
}

type mxSession struct {
	m   *mxServer
	cur gotMsg
}

func (s *mxSession) Reset() {
	s.m.mu.Lock()
	s.m.resets++
	s.m.mu.Unlock()
	s.cur = gotMsg{tls: s.cur.tls, user: s.cur.user}
}
func (s *mxSession) Logout() error { return nil }
func (s *mxSession) Mail(from string, opts *smtp.MailOptions) error {
	s.m.mu.Lock()
	s.m.mails++
	s.m.mu.Unlock()
	s.cur.from = from
	if opts != nil {
		s.cur.mail = *opts
	}
	return nil
}
func (s *mxSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.m.mu.Lock()
	r := s.m.rcptReply[to]
	s.m.mu.Unlock()
	if r != nil {
		return r
	}
	if s.m.txLimit > 0 && len(s.cur.rcpts) >= s.m.txLimit {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil {
		s.cur.ropts = append(s.cur.ropts, *opts)
	}
	return nil
}
func (s *mxSession) Data(r io.Reader) error {
	s.m.mu.Lock()
	hold := s.m.hold
	s.m.inData++
	s.m.maxInData = max(s.m.maxInData, s.m.inData)
	s.m.mu.Unlock()
	b, err := io.ReadAll(r)
	if hold != nil && err == nil {
		<-hold
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.inData--
	if err != nil {
		s.m.dataErrs++
		return err
	}
	if s.m.dataReply != nil {
		return s.m.dataReply
	}
	s.cur.data = string(b)
	s.m.msgs = append(s.m.msgs, s.cur)
	return nil
}

type authSession struct{ *mxSession }

func (s *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *authSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != s.m.user || pass != s.m.pass {
			return smtp.ErrAuthFailed
		}
		s.cur.user = user
		return nil
	}), nil
}
func (s *authSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.cur.user == "" {
		return smtp.ErrAuthRequired
	}
	return s.mxSession.Mail(from, opts)
}

// env is one test's outside world.
type env struct {
	t   testing.TB
	dns *fakeDNS
	net *testNet
	ca  *testCA
}

func newEnv(t testing.TB) *env {
	return &env{t: t, dns: newDNS(), net: newNet(t), ca: newCA(t)}
}

// mx publishes host as an MX of domain at ip, served by srv (nil: refused).
func (e *env) mx(domain, host string, pref uint16, ip string, srv *mxServer) {
	e.dns.mu.Lock()
	e.dns.mx[domain] = append(e.dns.mx[domain], MX{Host: host + ".", Pref: pref})
	e.dns.mu.Unlock()
	e.host(host, ip, srv)
}

// host publishes an address of host, served by srv (nil: refused).
func (e *env) host(host, ip string, srv *mxServer) {
	e.dns.setIP(host, ip)
	real := refusingAddr(e.t)
	if srv != nil {
		real = srv.addr
	}
	e.net.set(net.JoinHostPort(ip, fmt.Sprint(testPort)), real)
}

func (e *env) client(mod func(*Config)) *Client {
	cfg := Config{
		Hostname:        "client.test",
		Resolver:        e.dns,
		Port:            testPort,
		RootCAs:         e.ca.pool,
		DialContext:     e.net.dial,
		ConnectTimeout:  10 * time.Second,
		GreetingTimeout: 20 * time.Second,
		CommandTimeout:  20 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

const testBody = "From: a@sender.test\r\nTo: b@x.test\r\nSubject: hello\r\n\r\nHello there.\r\n"

func message(from string, rcpts ...string) Message {
	m := Message{From: from, Size: int64(len(testBody)),
		Body: func() (io.Reader, error) { return strings.NewReader(testBody), nil }}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, Rcpt{Addr: r})
	}
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func one(t testing.TB, rs []Result) Result {
	t.Helper()
	if len(rs) != 1 {
		t.Fatalf("got %d results, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

func wantDelivered(t testing.TB, r Result) {
	t.Helper()
	if !r.Delivered || r.Permanent || r.Code != 250 {
		t.Fatalf("want delivered, got %+v", r)
	}
}

func wantTemporary(t testing.TB, r Result, textHas string) {
	t.Helper()
	if r.Delivered || r.Permanent || r.Code < 400 || r.Code >= 500 || !strings.HasPrefix(r.Enhanced, "4.") {
		t.Fatalf("want temporary failure, got %+v", r)
	}
	if !strings.Contains(r.Text, textHas) {
		t.Fatalf("want %q in the text, got %+v", textHas, r)
	}
}

func wantPermanent(t testing.TB, r Result, code int, enhanced string) {
	t.Helper()
	if r.Delivered || !r.Permanent || r.Code != code || r.Enhanced != enhanced {
		t.Fatalf("want permanent %d %s, got %+v", code, enhanced, r)
	}
}
