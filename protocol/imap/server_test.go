package imap

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/replication"
)

// pipeConn is one end of net.Pipe that claims to come from remote.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (c pipeConn) RemoteAddr() net.Addr { return c.remote }

func testCert(t *testing.T) *tls.Config {
	t.Helper()
	c, err := localcert.New(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.ServerConfig()
}

// newTestServer is a server whose store is never reached: these tests stop
// before anything is logged in.
func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := NewServer(Config{Store: &replication.Store{}, TLS: testCert(t), Metrics: prometheus.NewRegistry(), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.start()
	return s
}

// connect hands the server a client connection from remote and returns
// the client's end.
func connect(t *testing.T, s *Server, remote string, implicitTLS bool) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	addr, err := net.ResolveTCPAddr("tcp", remote)
	if err != nil {
		t.Fatal(err)
	}
	go serveOne(s, pipeConn{Conn: server, remote: addr}, implicitTLS)
	if implicitTLS {
		tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
		t.Cleanup(func() { _ = tc.Close() })
		return tc
	}
	return client
}

func readLine(t *testing.T, r *bufio.Reader, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func command(t *testing.T, c net.Conn, r *bufio.Reader, tag, cmd string) []string {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(tag + " " + cmd + "\r\n")); err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		l := readLine(t, r, c)
		out = append(out, l)
		if strings.HasPrefix(l, tag+" ") {
			return out
		}
	}
}

func TestPlaintextLoginOnlyOverTLSOrLoopback(t *testing.T) {
	s := newTestServer(t, Options{})

	// From another machine, without TLS: LOGINDISABLED, STARTTLS offered,
	// LOGIN refused before it reaches the store.
	c := connect(t, s, "192.0.2.7:40000", false)
	r := bufio.NewReader(c)
	greeting := readLine(t, r, c)
	if !strings.Contains(greeting, "LOGINDISABLED") || !strings.Contains(greeting, "STARTTLS") || strings.Contains(greeting, "AUTH=PLAIN") {
		t.Fatalf("remote plain greeting: %q", greeting)
	}
	if got := command(t, c, r, "a", `LOGIN alice@example.test secret`); !strings.HasPrefix(got[len(got)-1], "a NO [PRIVACYREQUIRED]") {
		t.Fatalf("LOGIN without TLS: %q", got)
	}
	if got := command(t, c, r, "b", "STARTTLS"); !strings.HasPrefix(got[len(got)-1], "b OK") {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tr := bufio.NewReader(tc)
	caps := command(t, tc, tr, "c", "CAPABILITY")
	if !strings.Contains(caps[0], "AUTH=PLAIN") || strings.Contains(caps[0], "LOGINDISABLED") || strings.Contains(caps[0], "STARTTLS") {
		t.Fatalf("after STARTTLS: %q", caps)
	}

	// From loopback, without TLS: allowed.
	c2 := connect(t, s, "127.0.0.1:40001", false)
	r2 := bufio.NewReader(c2)
	if g := readLine(t, r2, c2); !strings.Contains(g, "AUTH=PLAIN") || strings.Contains(g, "LOGINDISABLED") {
		t.Fatalf("loopback greeting: %q", g)
	}

	// Implicit TLS from anywhere: allowed, and no STARTTLS on top.
	c3 := connect(t, s, "198.51.100.9:40002", true)
	r3 := bufio.NewReader(c3)
	if g := readLine(t, r3, c3); !strings.Contains(g, "AUTH=PLAIN") || strings.Contains(g, "STARTTLS") || strings.Contains(g, "LOGINDISABLED") {
		t.Fatalf("implicit TLS greeting: %q", g)
	}
}

func TestConnectionLimits(t *testing.T) {
	s := newTestServer(t, Options{MaxConnectionsPerIP: 2, MaxConnections: 3})
	var open []net.Conn
	for i, remote := range []string{"192.0.2.1:1", "192.0.2.1:2"} {
		c := connect(t, s, remote, false)
		r := bufio.NewReader(c)
		if g := readLine(t, r, c); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("connection %d: %q", i, g)
		}
		open = append(open, c)
	}
	c := connect(t, s, "192.0.2.1:3", false)
	if g := readLine(t, bufio.NewReader(c), c); !strings.HasPrefix(g, "* BYE") {
		t.Fatalf("third connection from one address: %q", g)
	}
	c = connect(t, s, "192.0.2.2:1", false)
	if g := readLine(t, bufio.NewReader(c), c); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("another address: %q", g)
	}
	c = connect(t, s, "192.0.2.3:1", false)
	if g := readLine(t, bufio.NewReader(c), c); !strings.HasPrefix(g, "* BYE") {
		t.Fatalf("over the node-wide limit: %q", g)
	}
	// Closing one frees its slot.
	_ = open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.OpenConnections() > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %d open", s.OpenConnections())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c = connect(t, s, "192.0.2.1:4", false)
	if g := readLine(t, bufio.NewReader(c), c); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("after a close: %q", g)
	}
}

func TestUnknownCommandBeforeLoginEndsConnection(t *testing.T) {
	s := newTestServer(t, Options{})
	c := connect(t, s, "127.0.0.1:5000", false)
	r := bufio.NewReader(c)
	readLine(t, r, c)
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n"))
	var lines []string
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE") {
		t.Fatalf("cross-protocol request: %q", lines)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	s, err := NewServer(Config{Store: &replication.Store{}, Options: Options{ShutdownGrace: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	readLine(t, r, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after Close")
	}
	if s.OpenConnections() != 0 {
		t.Fatalf("%d connections counted after Close", s.OpenConnections())
	}
}

// TestStartTLSDropsPipelinedPlaintext: commands sent after STARTTLS, before
// the handshake, are not taken as sent inside TLS (the guard answers
// STARTTLS and drops them), and after the upgrade STARTTLS is refused.
func TestStartTLSDropsPipelinedPlaintext(t *testing.T) {
	s := newTestServer(t, Options{})
	c := connect(t, s, "192.0.2.8:40000", false)
	r := bufio.NewReader(c)
	readLine(t, r, c)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("a STARTTLS\r\nb LOGOUT\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, r, c); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tr := bufio.NewReader(tc)
	// The first thing inside TLS answers this command, not "b LOGOUT".
	got := command(t, tc, tr, "c", "NOOP")
	if len(got) != 1 || !strings.HasPrefix(got[0], "c OK") {
		t.Fatalf("first response inside TLS: %q", got)
	}
	if got := command(t, tc, tr, "d", "STARTTLS"); strings.HasPrefix(got[len(got)-1], "d OK") {
		t.Fatalf("STARTTLS inside TLS: %q", got)
	}
}
