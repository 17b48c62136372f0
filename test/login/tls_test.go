package login_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/protocol/auth"
)

// A client that connects to an implicit-TLS port and sends nothing is
// dropped after the configured handshake deadline, on every protocol
// (port 993 had no deadline at all, 465 waited 5 minutes, 995 30 s).
// And the TLS ports still work for a client that does the handshake.
const silentWait = 20 * time.Second

func TestSilentClientOnImplicitTLSPortIsDropped(t *testing.T) {
	c := newCluster(t, 1, auth.LimiterOptions{}, func(cfg *node.Config) {
		cfg.TLSHandshakeTimeout = 200 * time.Millisecond
	})
	n := c.Node(0)
	for _, ep := range []string{node.EndpointSubmissions, node.EndpointIMAPS, node.EndpointPOP3S} {
		conn, err := net.DialTimeout("tcp", n.Endpoint(ep), wait)
		if err != nil {
			t.Fatal(err)
		}
		// 100 times the deadline (and less than any default): only a
		// server that ignores it lets this read time out.
		_ = conn.SetReadDeadline(time.Now().Add(silentWait))
		_, err = io.ReadAll(conn)
		_ = conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: a silent client was still connected after %s", ep, silentWait)
		}
	}
	// Handshaking clients get the protocol's greeting.
	for ep, greeting := range map[string]string{node.EndpointSubmissions: "220 ", node.EndpointIMAPS: "* OK", node.EndpointPOP3S: "+OK"} {
		conn, err := tlsDial(n.Endpoint(ep), c.ClientTLS())
		if err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
		buf := make([]byte, len(greeting))
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != greeting {
			t.Errorf("%s: greeting %q, %v", ep, buf, err)
		}
		_ = conn.Close()
	}
}

// A connection that does not log in is closed after the pre-login idle
// limit (imapserver alone allowed twice its 30 s), and one that logged in
// is not.
func TestIMAPPreLoginIdleLimit(t *testing.T) {
	c := newCluster(t, 1, auth.LimiterOptions{}, func(cfg *node.Config) {
		cfg.IMAP.LoginIdleTimeout = 300 * time.Millisecond
	})
	addr := c.Node(0).Endpoint(node.EndpointIMAP)
	in, r := dial(t, addr)
	defer in.Close()
	line(r)
	fmt.Fprintf(in, "a LOGIN %q %q\r\n", user, password)
	if l := line(r); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("login: %q", l)
	}
	silent, sr := dial(t, addr)
	defer silent.Close()
	line(sr) // greeting
	_ = silent.SetReadDeadline(time.Now().Add(silentWait))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("a silent client that did not log in was not dropped: %v", err)
	}
	// The logged-in client was just as idle, for longer.
	fmt.Fprintf(in, "b NOOP\r\n")
	if l := line(r); !strings.HasPrefix(l, "b OK") {
		t.Fatalf("logged-in client after the pre-login limit: %q", l)
	}
}
