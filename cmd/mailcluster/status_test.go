package main

import (
	"encoding/json"
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// sendMail delivers one message over SMTP to the node's MX port.
func sendMail(t *testing.T, addr, to, body string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	_ = c.Quit()
}

// `mailcluster status` shows how many message bodies the node holds now,
// not how many it counted when it started.
func TestStatusShowsCurrentBodyCount(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	n := c.Node(0)
	addr := n.HTTPAddr()
	admin := func(args ...string) string {
		t.Helper()
		code, out, errOut := cli(append(args, "--addr", addr, "--token", testToken)...)
		if code != 0 {
			t.Fatalf("mailcluster %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	admin("domain", "add", "example.test")
	admin("user", "add", "alice@example.test", "--password", "a long enough password")
	held := func() api.StorageStatus {
		var st api.ClusterStatus
		if err := json.Unmarshal([]byte(admin("status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		if st.Storage == nil {
			t.Fatal("status has no storage section")
		}
		return *st.Storage
	}
	cluster.WaitFor(t, "the bodies counted at start", cluster.Timeout, func() bool { return !held().BlobsCountedAt.IsZero() })
	if s := held(); s.BlobsHeld != 0 {
		t.Fatalf("a new node holds %d bodies", s.BlobsHeld)
	}
	const messages = 7
	for i := range messages {
		sendMail(t, n.Endpoint(node.EndpointSMTP), "alice@example.test", fmt.Sprintf(
			"From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: %d\r\nMessage-ID: <%d.%d@remote.test>\r\n\r\nBody %d.\r\n",
			i, i, time.Now().UnixNano(), i))
	}
	// Each 250 came after the body was durable here (one node, R = 1).
	if s := held(); s.BlobsHeld != messages {
		t.Fatalf("after %d deliveries status shows %d bodies held", messages, s.BlobsHeld)
	}
	out := admin("status")
	if !strings.Contains(out, fmt.Sprintf("message bodies on node1: %d held,", messages)) {
		t.Fatalf("status output:\n%s", out)
	}
	// The leader says which cluster-wide work it runs.
	cluster.WaitFor(t, "status to name the leader tasks", cluster.Timeout, func() bool {
		out = admin("status")
		return strings.Contains(out, "leader work on node1: reconcile, purge")
	})
}
