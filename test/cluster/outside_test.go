package cluster

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/simnet"
)

// A node without DNS servers does not start: it has no resolver to fall
// back to, by design.
func TestNodeWithoutDNSServersRefusesToStart(t *testing.T) {
	c := New(t, Options{Nodes: 1})
	for _, servers := range [][]string{nil, {}, {"dns.example.org"}} {
		cfg := c.memberConfig("lonely", t.TempDir(), 0)
		cfg.DNSServers = servers
		n, err := node.Start(cfg)
		if err == nil {
			_ = n.Halt(t.Context())
			t.Fatalf("a node started with dns_servers %q", servers)
		}
		if !strings.Contains(err.Error(), "dns_servers") {
			t.Fatalf("dns_servers %q: error %q does not name the setting", servers, err)
		}
	}
}

// Every node resolves through the harness's DNS, which sends every domain
// to the harness's sink, which a node reaches at smtp_remote_port.
func TestNodesResolveThroughTheHarnessDNSToTheSink(t *testing.T) {
	c := New(t, Options{Nodes: 2})
	for _, i := range c.Running() {
		n := c.Node(i)
		if got := n.Resolver().Servers(); !slices.Equal(got, []string{c.DNS().Addr()}) {
			t.Fatalf("%s resolves through %v, want only %s", c.Members[i].ID, got, c.DNS().Addr())
		}
	}
	ctx := t.Context()
	r := c.Node(1).Resolver()
	mx, err := r.LookupMX(ctx, "anywhere.test")
	if err != nil || len(mx) != 1 || mx[0].Host != c.Sink().Host() {
		t.Fatalf("MX anywhere.test: %v %v", mx, err)
	}
	ips, err := r.LookupIP(ctx, mx[0].Host)
	if err != nil || len(ips) == 0 {
		t.Fatalf("A %s: %v %v", mx[0].Host, ips, err)
	}
	if q := c.DNS().Queries(); !slices.Contains(q, simnet.Query{Name: "anywhere.test", Type: "MX"}) {
		t.Fatalf("the harness DNS did not see the lookup: %v", q)
	}
	// What an outbound client will do: dial the MX's address at the port
	// the node is configured with.
	addr := net.JoinHostPort(ips[0].String(), strconv.Itoa(c.Members[1].cfg.RemoteSMTPPort))
	cl, err := smtp.DialStartTLS(addr, c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.SendMail("a@example.test", []string{"someone@anywhere.test"}, strings.NewReader("Subject: out\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if m := c.Sink().MessagesTo("someone@anywhere.test"); len(m) != 1 || !m[0].TLS {
		t.Fatalf("sink got %+v", m)
	}
}

// fatalRecorder is a testing.TB whose Fatalf only records.
type fatalRecorder struct {
	testing.TB
	msgs []string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

// A test that points a node at any resolver but a loopback one fails,
// loudly, before the node starts.
func TestHarnessRefusesTheSystemResolver(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	c := &Cluster{t: rec}
	c.checkOutside("node1", node.Config{DNSServers: []string{"127.0.0.1:5353", "[::1]:53"}})
	if len(rec.msgs) != 0 {
		t.Fatalf("loopback servers refused: %v", rec.msgs)
	}
	c.checkOutside("node1", node.Config{DNSServers: []string{"10.255.255.53:53"}})
	c.checkOutside("node1", node.Config{DNSServers: []string{"8.8.8.8"}})
	if len(rec.msgs) != 2 || !strings.Contains(rec.msgs[0], "never the system's resolver") {
		t.Fatalf("non-loopback servers: %v", rec.msgs)
	}
}
