package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/mailauth/dsn"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/simnet"
)

// Outbound delivery through real nodes: the workers on every node send the
// queue to the harness's sink (every domain's MX), sign with the sender
// domain's DKIM keys, retry, bounce, and move a dead sender's mail to
// another node without two transactions at once.

// outboundCluster is a 3-node cluster with a short retry schedule.
func outboundCluster(t *testing.T, lease time.Duration) *Cluster {
	t.Helper()
	return New(t, Options{Configure: func(i int, cfg *node.Config) {
		cfg.OutboundRetry = []time.Duration{300 * time.Millisecond, 700 * time.Millisecond}
		cfg.OutboundLease = lease
	}})
}

// outMessage is a message from alice@example.test.
func outMessage(to, subject string) []byte {
	return []byte(fmt.Sprintf("From: Alice <alice@example.test>\r\nTo: <%s>\r\nSubject: %s\r\n"+
		"Message-ID: <%d@example.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nHello from the cluster.\r\n", to, subject, time.Now().UnixNano()))
}

// enqueue queues body for outside recipients through node via, as the
// delivery pipeline's one commit does.
func enqueue(t *testing.T, c *Cluster, via int, from string, body []byte, expires, delayDSN time.Duration, to ...string) []state.QueueID {
	t.Helper()
	s := c.Node(via).Store()
	var b replication.Ingested
	Retry(t, "ingest", func() (err error) {
		b, err = s.Ingest(ctxT(t), bytes.NewReader(body), 0)
		return err
	})
	now := time.Now()
	var targets []state.QueueTarget
	for _, r := range to {
		qt := state.QueueTarget{From: from, To: r, Account: from, Expires: now.Add(expires).UnixNano()}
		if delayDSN > 0 {
			qt.DelayDSNAt = now.Add(delayDSN).UnixNano()
		}
		targets = append(targets, qt)
	}
	var d replication.Delivered
	Retry(t, "enqueue", func() (err error) {
		d, err = s.CommitDeliveryQueued(ctxT(t), b, nil, targets, now)
		return err
	})
	if len(d.Queued) != len(to) {
		t.Fatalf("queued %v for %v", d.Queued, to)
	}
	return d.Queued
}

// waitQueueEmpty waits until every running node's queue is empty.
func waitQueueEmpty(t *testing.T, c *Cluster) {
	t.Helper()
	for _, i := range c.Running() {
		s := c.Node(i).Store()
		c.WaitFor("an empty queue on "+c.Members[i].ID, func() bool {
			st, err := s.QueueStats(ctxT(t))
			return err == nil && st.Len == 0
		})
	}
}

// withDKIM gives example.test its keys (the leader task does this for
// domains that exist when it starts), publishes them in the harness DNS,
// and waits until every node can sign with them.
func withDKIM(t *testing.T, c *Cluster) {
	t.Helper()
	s := c.Node(c.Leader()).Store()
	Retry(t, "dkim keys", func() error { _, err := s.EnsureDKIMKeys(ctxT(t)); return err })
	keys, err := s.DKIMKeys(ctxT(t), "example.test")
	if err != nil || len(keys) != 2 {
		t.Fatalf("dkim keys: %+v, %v", keys, err)
	}
	for _, k := range keys {
		if err := c.DNS().Set(k.Selector+"._domainkey.example.test", "TXT", k.Record); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("dkim keys on "+n.ID(), func() bool {
			ks, err := n.Store().DKIMSigningKeys(ctxT(t), "example.test")
			return err == nil && len(ks) == 2
		})
	}
}

// inboxMessages reads the raw messages of a user's INBOX through node n.
func inboxMessages(t *testing.T, n *node.Node, user string) [][]byte {
	t.Helper()
	account := user + "@example.test"
	s := n.Store()
	mb, err := s.OpenMailbox(ctxT(t), account, "INBOX")
	if err != nil {
		t.Fatalf("open INBOX: %v", err)
	}
	var out [][]byte
	err = s.Messages(ctxT(t), account, mb.ID, 1, 0, func(m state.Message) error {
		b, err := s.OpenBody(ctxT(t), m.Blob)
		if err != nil {
			return err
		}
		defer b.Close()
		raw, err := io.ReadAll(b)
		out = append(out, raw)
		return err
	})
	if err != nil {
		t.Fatalf("read INBOX: %v", err)
	}
	return out
}

// dsnsIn parses every DSN in alice's INBOX, checking each with go-message
// too (a standard MIME reader sees a multipart/report with its parts).
func dsnsIn(t *testing.T, c *Cluster) []*dsn.Report {
	t.Helper()
	var out []*dsn.Report
	for _, raw := range inboxMessages(t, c.Node(c.Leader()), "alice") {
		r, err := dsn.Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("not a DSN: %v\n%s", err, raw)
		}
		e, err := message.Read(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("go-message: %v", err)
		}
		mt, params, _ := e.Header.ContentType()
		if mt != "multipart/report" || params["report-type"] != "delivery-status" {
			t.Fatalf("go-message sees %s %v", mt, params)
		}
		mr := e.MultipartReader()
		var types []string
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("go-message part: %v", err)
			}
			pt, _, _ := p.Header.ContentType()
			types = append(types, pt)
		}
		if len(types) != 3 || types[1] != "message/delivery-status" {
			t.Fatalf("DSN parts %v", types)
		}
		if from := e.Header.Get("From"); !strings.Contains(from, "MAILER-DAEMON@") {
			t.Fatalf("DSN From %q", from)
		}
		out = append(out, r)
	}
	return out
}

// (a) A message queued through node A reaches the sink once, signed twice
// (Ed25519 and RSA) with keys that verify against the DNS; the queue is
// empty afterwards everywhere.
func TestOutboundDeliversOnceWithDKIM(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	withDKIM(t, c)
	to := "bob@remote.test"
	body := outMessage(to, "signed")
	enqueue(t, c, 0, "alice@example.test", body, time.Hour, 0, to)

	c.WaitFor("the message at the sink", func() bool { return len(c.Sink().MessagesTo(to)) > 0 })
	waitQueueEmpty(t, c)
	got := c.Sink().MessagesTo(to)
	if len(got) != 1 {
		t.Fatalf("the sink got %d copies", len(got))
	}
	m := got[0]
	if m.From != "alice@example.test" || !bytes.HasSuffix(m.Data, body) {
		t.Fatalf("sink got from %q:\n%s", m.From, m.Data)
	}
	r := c.Node(1).Resolver()
	verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m.Data), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 2 {
		t.Fatalf("%d DKIM signatures, want 2 (ed25519 and rsa)", len(verifs))
	}
	for _, v := range verifs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Fatalf("signature of %s: %v", v.Domain, v.Err)
		}
	}
}

// (b) A remote 4xx is retried, and the message then delivered once.
func TestOutboundRetriesATemporaryFailure(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	to := "carol@remote.test"
	c.Sink().SetReply(to, simnet.Reply{Code: 451, Enhanced: "4.3.0", Text: "try again later", Times: 2})
	enqueue(t, c, 1, "alice@example.test", outMessage(to, "retried"), time.Hour, 0, to)
	c.WaitFor("the message at the sink", func() bool { return len(c.Sink().MessagesTo(to)) > 0 })
	waitQueueEmpty(t, c)
	if n := len(c.Sink().MessagesTo(to)); n != 1 {
		t.Fatalf("the sink got %d copies", n)
	}
	// The sink accepts only after its two 451s were used up: two
	// attempts were refused and retried.
	if len(dsnsIn(t, c)) != 0 {
		t.Fatal("a DSN for a message that was delivered")
	}
}

// (c) A remote 5xx returns the message to the sender: a failure DSN in
// alice's INBOX.
func TestOutboundPermanentFailureBouncesToTheSender(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	to := "dave@remote.test"
	c.Sink().SetReply(to, simnet.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	enqueue(t, c, 2, "alice@example.test", outMessage(to, "bounced"), time.Hour, 0, to)
	c.WaitFor("a DSN in alice's INBOX", func() bool { return len(inboxMessages(t, c.Node(0), "alice")) > 0 })
	waitQueueEmpty(t, c)
	reports := dsnsIn(t, c)
	if len(reports) != 1 {
		t.Fatalf("%d DSNs", len(reports))
	}
	rc := reports[0].Recipients
	if len(rc) != 1 || rc[0].Action != dsn.Failed || rc[0].Status != "5.1.1" || rc[0].FinalRecipient != to ||
		!strings.Contains(rc[0].DiagnosticCode, "no such user") {
		t.Fatalf("DSN recipients %+v", rc)
	}
	if len(c.Sink().MessagesTo(to)) != 0 {
		t.Fatal("the sink stored a refused message")
	}
}

// (d) A domain that cannot be reached: one delayed DSN once the delay
// passes, then at expiry a failure DSN, and the entry is gone.
func TestOutboundUnreachableDelayedThenExpired(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	if err := c.DNS().SetFailure("gone.test", simnet.ServFail); err != nil {
		t.Fatal(err)
	}
	to := "erin@gone.test"
	enqueue(t, c, 0, "alice@example.test", outMessage(to, "unreachable"), 8*time.Second, 2*time.Second, to)
	c.WaitFor("two DSNs in alice's INBOX", func() bool { return len(inboxMessages(t, c.Node(0), "alice")) >= 2 })
	waitQueueEmpty(t, c)
	reports := dsnsIn(t, c)
	if len(reports) != 2 {
		t.Fatalf("%d DSNs, want a delayed one and a failed one", len(reports))
	}
	var actions []string
	for _, r := range reports {
		actions = append(actions, string(r.Recipients[0].Action)+" "+r.Recipients[0].Status)
	}
	if actions[0] != "delayed 4.4.3" || actions[1] != "failed 4.4.7" {
		t.Fatalf("DSNs %v, want a delayed then a failed one", actions)
	}
	if !strings.Contains(reports[1].Recipients[0].DiagnosticCode, "expired") {
		t.Fatalf("failure DSN diagnostic %q", reports[1].Recipients[0].DiagnosticCode)
	}
}

// (e) Fencing: the sink holds its reply to DATA; the node holding the
// lease is killed; once the lease has run out another node delivers, and
// the sink never had two transactions of the recipient at once.
func TestOutboundLeaseMovesWhenTheSenderDies(t *testing.T) {
	c := outboundCluster(t, 0) // the default lease, 10 s
	withAccounts(t, c, "alice")
	to := "frank@remote.test"
	c.Sink().Hold()
	defer c.Sink().Release()
	ids := enqueue(t, c, 0, "alice@example.test", outMessage(to, "fenced"), time.Hour, 0, to)
	c.WaitFor("the held DATA", func() bool { return c.Sink().Held() == 1 })
	var e state.QueueEntry
	Retry(t, "read the entry", func() (err error) {
		e, err = c.Node(c.Leader()).Store().QueueEntry(ctxT(t), ids[0])
		return err
	})
	holder := -1
	for i, m := range c.Members {
		if m.ID == e.Lease.Holder {
			holder = i
		}
	}
	if holder < 0 {
		t.Fatalf("entry %+v has no holder", e)
	}
	// While the remote keeps it waiting, the holder renews its lease past
	// the first term (the queue clock went beyond the claim's Until), and
	// nobody else starts a transaction.
	first := e.Lease
	WaitFor(t, "the lease renewed past its first term", 2*Timeout, func() bool {
		cur, err := c.Node(c.Leader()).Store().QueueEntry(ctxT(t), ids[0])
		return err == nil && cur.Lease.Token == first.Token && cur.Lease.Until > first.Until+int64(10*time.Second)
	})
	if n := c.Sink().MaxInProgress(to); n != 1 {
		t.Fatalf("%d transactions of %s at once while the first was held", n, to)
	}
	killed := time.Now()
	c.Kill(holder)
	c.WaitFor("the first transaction to end", func() bool { return c.Sink().InProgress(to) == 0 })
	c.Sink().Release()
	WaitFor(t, "another node to deliver", 2*Timeout, func() bool { return len(c.Sink().MessagesTo(to)) > 0 })
	took := time.Since(killed)
	t.Logf("killed %s holding the lease; delivered by another node %s later", c.Members[holder].ID, took.Round(10*time.Millisecond))
	waitQueueEmpty(t, c)
	got := c.Sink().MessagesTo(to)
	if len(got) != 1 {
		t.Fatalf("the sink stored %d copies", len(got))
	}
	if n := c.Sink().MaxInProgress(to); n != 1 || len(c.Sink().Overlapped()) != 0 {
		t.Fatalf("two transactions of %s at once (max %d, overlapped %v)", to, n, c.Sink().Overlapped())
	}
	if len(c.Sink().Abandoned()) != 1 {
		t.Fatalf("abandoned transactions: %d, want the dead node's one", len(c.Sink().Abandoned()))
	}
}

// An operator's bounce (queue bounce) fails a waiting entry at once with a
// failure DSN to the sender.
func TestOutboundOperatorBounce(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	if err := c.DNS().SetFailure("stuck.test", simnet.ServFail); err != nil {
		t.Fatal(err)
	}
	to := "gina@stuck.test"
	ids := enqueue(t, c, 1, "alice@example.test", outMessage(to, "stuck"), time.Hour, 0, to)
	s := c.Node(c.Leader()).Store()
	c.WaitFor("a failed attempt", func() bool {
		e, err := s.QueueEntry(ctxT(t), ids[0])
		return err == nil && e.Attempts >= 1 && e.LastReply != ""
	})
	Retry(t, "bounce", func() error { _, err := s.QueueAdmin(ctxT(t), state.QueueBounce, ids); return err })
	c.WaitFor("a DSN in alice's INBOX", func() bool { return len(inboxMessages(t, c.Node(0), "alice")) > 0 })
	waitQueueEmpty(t, c)
	reports := dsnsIn(t, c)
	if len(reports) != 1 || reports[0].Recipients[0].Action != dsn.Failed || reports[0].Recipients[0].FinalRecipient != to {
		t.Fatalf("DSNs %+v", reports)
	}
}

// The work spreads over the nodes (each sends its share, greeting with its
// own host name), and the recipients of one message at one domain go in
// one transaction.
func TestOutboundSpreadsAndGroups(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	const n = 12
	for i := range n {
		to := fmt.Sprintf("r%d@d%d.test", i, i)
		enqueue(t, c, i%3, "alice@example.test", outMessage(to, "spread"), time.Hour, 0, to)
	}
	group := []string{"x1@group.test", "x2@group.test", "x3@group.test"}
	enqueue(t, c, 0, "alice@example.test", outMessage(group[0], "grouped"), time.Hour, 0, group...)
	c.WaitFor("every message at the sink", func() bool { return len(c.Sink().Messages()) >= n+1 })
	waitQueueEmpty(t, c)
	msgs := c.Sink().Messages()
	if len(msgs) != n+1 {
		t.Fatalf("the sink got %d messages, want %d", len(msgs), n+1)
	}
	helos := map[string]int{}
	for _, m := range msgs {
		helos[m.Helo]++
	}
	if len(helos) < 2 {
		t.Fatalf("every message went out from one node: %v", helos)
	}
	if got := c.Sink().MessagesTo(group[0]); len(got) != 1 || strings.Join(got[0].To, ",") != strings.Join(group, ",") {
		t.Fatalf("the grouped message: %+v", got)
	}
}

// A DSN for a sender outside the cluster (a forward's, say) is queued with
// the null sender and goes out like any message; nothing bounces a DSN.
func TestOutboundBounceToAnOutsideSender(t *testing.T) {
	c := outboundCluster(t, 0)
	withAccounts(t, c, "alice")
	to, sender := "henry@remote.test", "zed@elsewhere.test"
	c.Sink().SetReply(to, simnet.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	enqueue(t, c, 0, sender, outMessage(to, "forwarded"), time.Hour, 0, to)
	c.WaitFor("the DSN at the sink", func() bool { return len(c.Sink().MessagesTo(sender)) > 0 })
	waitQueueEmpty(t, c)
	got := c.Sink().MessagesTo(sender)
	if len(got) != 1 || got[0].From != "" {
		t.Fatalf("DSNs to the outside sender: %+v", got)
	}
	r, err := dsn.Parse(bytes.NewReader(got[0].Data))
	if err != nil || r.Recipients[0].FinalRecipient != to || r.Recipients[0].Action != dsn.Failed {
		t.Fatalf("DSN %+v, %v", r, err)
	}
}
