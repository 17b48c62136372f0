package login_test

import (
	"io"
	"net"
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
