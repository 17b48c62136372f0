package smtp_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// Mail sent through any node's MX port is stored once for the cluster and
// read back on another node, with trace headers naming the receiving node.
func TestDeliverThroughEveryNode(t *testing.T) {
	c := newCluster(t, nil, "alice")
	for i := range 3 {
		subject := fmt.Sprintf("via node%d", i+1)
		cl := dialMX(t, c, i)
		if err := send(cl, "sender@remote.test", []string{addr("alice")}, strings.NewReader(message(subject, "Hello."))); err != nil {
			t.Fatalf("send via node%d: %v", i+1, err)
		}
		other := (i + 1) % 3
		got := withSubject(mailbox(t, c, other, "alice"), subject)
		if len(got) != 1 {
			t.Fatalf("node%d sees %d copies of the message sent via node%d", other+1, len(got), i+1)
		}
		body := got[0].Body
		wantReceived := fmt.Sprintf("Received: from localhost ([127.0.0.1])\r\n\tby node%d.test (mailcluster) with ESMTP id ", i+1)
		// Return-Path first; our Authentication-Results and spam verdict
		// above our Received field (RFC 8601 §5: above the trace it covers).
		wantAuth := fmt.Sprintf("Authentication-Results: node%d.test;\r\n\tspf=none smtp.mailfrom=sender@remote.test;", i+1)
		if !strings.HasPrefix(body, "Return-Path: <sender@remote.test>\r\n"+wantAuth) ||
			!strings.Contains(body, "\r\nX-Spam-Score: ") || !strings.Contains(body, "\r\n"+wantReceived) ||
			strings.Index(body, "X-Spam-Score") > strings.Index(body, "Received:") {
			t.Fatalf("trace headers:\n%s", body[:min(len(body), 600)])
		}
		if !strings.Contains(body, "\tfor <alice@example.test>;") || !strings.HasSuffix(body, "\r\nHello.\r\n") {
			t.Fatalf("stored message:\n%s", body)
		}
	}
	// The node's /metrics shows what happened.
	resp, err := http.Get("http://" + c.Node(0).HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`mailcluster_smtp_messages_accepted_total{listener="mx"} 1`, "mailcluster_smtp_ack_latency_seconds_bucket"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A message for three local recipients is one blob referenced three times.
func TestThreeRecipientsAreOneBlob(t *testing.T) {
	c := newCluster(t, nil, "alice", "bob", "carol")
	before := blobCount(t, c, 0)
	cl := dialMX(t, c, 1)
	if err := send(cl, "sender@remote.test", []string{addr("alice"), addr("bob"), addr("carol")}, strings.NewReader(message("three", "x"))); err != nil {
		t.Fatal(err)
	}
	var blobs []string
	for _, u := range []string{"alice", "bob", "carol"} {
		got := mailbox(t, c, 2, u)
		if len(got) != 1 {
			t.Fatalf("%s has %d messages", u, len(got))
		}
		if strings.Contains(got[0].Body, "for <") {
			t.Fatalf("Received header names a recipient of a multi-recipient message")
		}
		blobs = append(blobs, got[0].Blob.String())
	}
	if blobs[0] != blobs[1] || blobs[1] != blobs[2] {
		t.Fatalf("three recipients, blobs %v: want one", blobs)
	}
	c.WaitFor("node1 to hold the body", func() bool { return blobCount(t, c, 0) >= before+1 })
	if n := blobCount(t, c, 0); n != before+1 {
		t.Fatalf("node1 holds %d new bodies, want 1", n-before)
	}
}

// Submission: STARTTLS on 587 with AUTH PLAIN, implicit TLS on 465 with
// AUTH LOGIN; mail to local recipients is delivered through the store.
func TestSubmissionEndToEnd(t *testing.T) {
	c := newCluster(t, nil, "alice", "bob")
	cl := dialSubmission(t, c, 1, "alice")
	if err := send(cl, addr("alice"), []string{addr("bob")}, strings.NewReader(message("submitted", "hi bob"))); err != nil {
		t.Fatal(err)
	}
	tc, err := gosmtp.DialTLS(c.Node(2).Endpoint(node.EndpointSubmissions), c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Auth(sasl.NewLoginClient(addr("alice"), password)); err != nil {
		t.Fatalf("AUTH LOGIN on 465: %v", err)
	}
	if err := send(tc, addr("alice"), []string{addr("bob")}, strings.NewReader(message("implicit tls", "hi again"))); err != nil {
		t.Fatal(err)
	}
	got := mailbox(t, c, 0, "bob")
	for _, subject := range []string{"submitted", "implicit tls"} {
		m := withSubject(got, subject)
		if len(m) != 1 {
			t.Fatalf("bob has %d copies of %q", len(m), subject)
		}
		if !strings.Contains(m[0].Body, "\t(using TLSv1.3 with cipher ") || !strings.Contains(m[0].Body, " with ESMTPSA id ") {
			t.Fatalf("Received header lacks TLS or AUTH details:\n%s", m[0].Body)
		}
	}
	// No copy in alice's Sent folder: mail clients append their own via IMAP.
	mb, err := c.Node(0).Store().OpenMailbox(ctxT(t), addr("alice"), "Sent")
	if err == nil && mb.Messages != 0 {
		t.Fatalf("Sent has %d messages", mb.Messages)
	}
}

// Every refusal has its reply code on the wire, and none leaves a message.
func TestRefusalsOnTheWire(t *testing.T) {
	c := newCluster(t, func(i int, cfg *node.Config) {
		if i == 2 {
			cfg.SMTP.MaxMessageSize = 64 << 10
		}
	}, "alice", "bob", "full", "off", "small")
	s := c.Node(c.Leader()).Store()
	// "full" may hold one message and has one; "small" may hold 1000 bytes.
	// Setup writes ride out an election: setting a quota or flag twice sets
	// it once, and the filler is delivered exactly once (cluster.Deliver).
	cluster.RetryIdempotent(t, "quota of full", func() error { return s.SetQuota(ctxT(t), addr("full"), 0, 1) })
	if d := cluster.Deliver(t, c.Node(c.Leader()), []byte(message("filler", "x")), []replication.Recipient{{Account: addr("full")}}); d.Results[0].Err() != nil {
		t.Fatal(d.Results[0].Err())
	}
	cluster.RetryIdempotent(t, "quota of small", func() error { return s.SetQuota(ctxT(t), addr("small"), 1000, 0) })
	cluster.RetryIdempotent(t, "disable off", func() error { return s.SetUserDisabled(ctxT(t), addr("off"), true) })

	// Node 0 decides quota and disabled accounts from its own state: let it
	// apply the changes above first.
	cluster.Retry(t, "read barrier on node 0", func() error { return c.Node(0).Store().Barrier(ctxT(t)) })
	mx := dialMX(t, c, 0)
	for _, tc := range []struct{ rcpt, want string }{
		{"nobody@example.test", "550 5.1.1"},
		{"someone@elsewhere.test", "554 5.7.1"},
		{addr("full"), "452 4.2.2"},
		{addr("off"), "550 5.2.1"},
	} {
		if err := mx.Mail("sender@remote.test", nil); err != nil {
			t.Fatal(err)
		}
		if got := code(mx.Rcpt(tc.rcpt, nil)); got != tc.want {
			t.Errorf("MX RCPT %s: %s, want %s", tc.rcpt, got, tc.want)
		}
		_ = mx.Reset()
	}
	// A message that would not fit: refused at RCPT when SIZE says so, and
	// at the end of DATA otherwise.
	if err := mx.Mail("sender@remote.test", &gosmtp.MailOptions{Size: 5000}); err != nil {
		t.Fatal(err)
	}
	if got := code(mx.Rcpt(addr("small"), nil)); got != "452 4.2.2" {
		t.Errorf("RCPT with SIZE over the quota: %s, want 452 4.2.2", got)
	}
	_ = mx.Reset()
	if got := code(send(mx, "sender@remote.test", []string{addr("small"), addr("alice")}, newGenerated(5000))); got != "452 4.2.2" {
		t.Errorf("DATA over the quota: %s, want 452 4.2.2", got)
	}
	// Too large: declared with SIZE, and sent without it.
	small := dialMX(t, c, 2)
	if got := code(small.Mail("sender@remote.test", &gosmtp.MailOptions{Size: 100 << 10})); got != "552 5.3.4" {
		t.Errorf("MAIL SIZE over the limit: %s, want 552 5.3.4", got)
	}
	if got := code(send(small, "sender@remote.test", []string{addr("alice")}, newGenerated(100<<10))); got != "552 5.3.4" {
		t.Errorf("DATA over the limit: %s, want 552 5.3.4", got)
	}

	sub := dialSubmission(t, c, 1, "")
	if got := code(sub.Mail(addr("alice"), nil)); got != "530 5.7.0" {
		t.Errorf("MAIL before AUTH: %s, want 530 5.7.0", got)
	}
	if got := code(sub.Auth(sasl.NewPlainClient("", addr("alice"), "wrong"))); got != "535 5.7.8" {
		t.Errorf("wrong password: %s, want 535 5.7.8", got)
	}
	if err := sub.Auth(sasl.NewPlainClient("", addr("alice"), password)); err != nil {
		t.Fatal(err)
	}
	if got := code(sub.Mail(addr("bob"), nil)); got != "553 5.7.1" {
		t.Errorf("MAIL FROM someone else's address: %s, want 553 5.7.1", got)
	}
	if err := sub.Mail(addr("alice"), nil); err != nil {
		t.Fatal(err)
	}
	if err := sub.Rcpt("friend@remote.test", nil); err != nil {
		t.Errorf("submission to a remote recipient: %v, want it taken (for the outbound queue)", err)
	}
	_ = sub.Reset()
	for _, u := range []string{"alice", "bob", "small"} {
		if n := len(mailbox(t, c, 1, u)); n != 0 {
			t.Fatalf("%s has %d messages after refusals", u, n)
		}
	}
}

// A 250 is a promise: the node that gave it can die at once and the
// message is still there.
func TestAcknowledgedMessageSurvivesKillingTheNode(t *testing.T) {
	c := newCluster(t, nil, "alice")
	for _, victim := range []int{c.Leader(), c.Follower()} {
		// The promise is about a 250: after "it may have been stored" (an
		// election on a loaded machine) send a new message instead, so
		// that the one checked below was acknowledged.
		var subject string
		for attempt := 0; ; attempt++ {
			subject = fmt.Sprintf("acked by node%d (%d)", victim+1, attempt)
			err := sendPatiently(t, c, victim, "sender@remote.test", []string{addr("alice")}, message(subject, "x"), nil)
			var se *gosmtp.SMTPError
			if errors.As(err, &se) && se.Code == 451 && strings.Contains(se.Message, "may have been stored") && attempt < 10 {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		c.Kill(victim) // right after the 250
		for _, i := range c.Running() {
			if got := withSubject(mailboxEventually(t, c, i, "alice"), subject); len(got) != 1 {
				t.Fatalf("after killing node%d, node%d has %d copies", victim+1, i+1, len(got))
			}
		}
		c.Restart(victim)
		c.WaitForVoters(3)
		waitGossip(t, c)
	}
}

// waitGossip waits until every running node sees every other as alive, so
// that reads can fetch bodies from a node that just came back.
func waitGossip(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	c.WaitFor("every node to see every other alive", func() bool {
		for _, i := range c.Running() {
			st, err := c.Node(i).ClusterStatus(ctxT(t))
			if err != nil {
				return false
			}
			alive := 0
			for _, m := range st.Members {
				if m.Gossip == "alive" {
					alive++
				}
			}
			if alive != len(c.Running()) {
				return false
			}
		}
		return true
	})
}

// A node cut off from the majority answers 451 4.3.0, and the message
// never shows up later.
func TestMinorityNodeAnswers451(t *testing.T) {
	c := newCluster(t, func(_ int, cfg *node.Config) {
		cfg.SMTP.DeliveryTimeout = 5 * time.Second
	}, "alice")
	victim := c.Leader()
	var others []int
	for _, i := range c.Running() {
		if i != victim {
			others = append(others, i)
		}
	}
	cl := dialMX(t, c, victim)
	c.Partition([]int{victim}, others)
	if got := code(send(cl, "sender@remote.test", []string{addr("alice")}, strings.NewReader(message("lost", "x")))); got != "451 4.3.0" {
		t.Fatalf("delivery on the cut-off node: %s, want 451 4.3.0", got)
	}
	c.Heal()
	c.WaitForVoters(3)
	c.Leader() // every node agrees on one leader again
	waitGossip(t, c)
	// A later message through the same node gets in; by then anything of
	// the refused one would have been applied before it.
	if err := sendPatiently(t, c, victim, "sender@remote.test", []string{addr("alice")}, message("after heal", "x"), func() bool {
		return len(withSubject(mailbox(t, c, victim, "alice"), "after heal")) > 0
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got := mailbox(t, c, i, "alice")
		if len(withSubject(got, "after heal")) != 1 || len(withSubject(got, "lost")) != 0 || len(got) != 1 {
			t.Fatalf("node%d has %d messages (want only the one after healing)", i+1, len(got))
		}
	}
}

// BDAT chunks and a fully pipelined transaction.
func TestBDATAndPipelining(t *testing.T) {
	c := newCluster(t, nil, "alice", "bob")
	r := dialRaw(t, c.Node(1).Endpoint(node.EndpointSMTP))
	r.cmd("EHLO client.test", "250")
	part1, part2 := "Subject: chunks\r\n\r\nfirst, ", "second\r\n"
	r.send("MAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n" +
		fmt.Sprintf("BDAT %d\r\n%sBDAT %d LAST\r\n%s", len(part1), part1, len(part2), part2))
	for _, want := range []string{"250", "250", "250", "250", "250 2.0.0"} {
		r.expect(want)
	}
	r.send("MAIL FROM:<sender@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
	for _, want := range []string{"250", "550 5.1.1", "250", "354"} {
		r.expect(want)
	}
	r.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	r.expect("250 2.0.0")
	r.expect("221")
	for _, u := range []string{"alice", "bob"} {
		got := withSubject(mailbox(t, c, 0, u), "chunks")
		if len(got) != 1 || !strings.HasSuffix(got[0].Body, part1+part2) {
			t.Fatalf("%s: chunked message %d copies", u, len(got))
		}
	}
	if got := withSubject(mailbox(t, c, 2, "alice"), "pipelined"); len(got) != 1 {
		t.Fatalf("pipelined message: %d copies", len(got))
	}
}

// A 25 MiB message streams through to the store: no node holds it in
// memory, and it reads back bit-exact on another node.
func TestLargeMessageStreams(t *testing.T) {
	c := newCluster(t, nil, "alice")
	const size = 25 << 20
	want, _ := sha(newGenerated(size))
	prof := startHeapWatch(t)
	cl := dialMX(t, c, 1)
	err := send(cl, "sender@remote.test", []string{addr("alice")}, newGenerated(size))
	peak, where := prof.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak live heap allocated by mailcluster and go-smtp code while a %d MiB message went through: %d KiB (largest: %s)", size>>20, peak>>10, where)
	if peak > 8<<20 {
		t.Fatalf("%d MiB of live heap held by mailcluster/go-smtp code during a %d MiB delivery (largest: %s): the body is held in memory", peak>>20, size>>20, where)
	}
	got := withSubject(mailbox(t, c, 2, "alice"), "big")
	if len(got) != 1 {
		t.Fatalf("%d copies", len(got))
	}
	i := strings.Index(got[0].Body, "\r\nSubject: big\r\n")
	if i < 0 || sha256.Sum256([]byte(got[0].Body[i+2:])) != want {
		t.Fatal("the stored message differs from what was sent")
	}
}

// Malformed input gets the right reply and leaves no trace in the store.
func TestMalformedInputLeavesNoTrace(t *testing.T) {
	c := newCluster(t, nil, "alice")
	ep := c.Node(0).Endpoint(node.EndpointSMTP)
	blobsBefore := []int{blobCount(t, c, 0), blobCount(t, c, 1), blobCount(t, c, 2)}
	start := func() *rawClient {
		r := dialRaw(t, ep)
		r.cmd("EHLO client.test", "250")
		r.cmd("MAIL FROM:<sender@remote.test>", "250")
		r.cmd("RCPT TO:<alice@example.test>", "250")
		return r
	}
	for _, tc := range []struct{ name, data, want string }{
		{"bare LF", "Subject: a\r\n\r\none\ntwo\r\n.\r\n", "554 5.6.0"},
		{"bare LF dot (smuggling)", "Subject: a\r\n\r\none\n.\nMAIL FROM:<x@evil.test>\r\n.\r\n", "554 5.6.0"},
		{"NUL bytes", "Subject: a\r\n\r\none\x00two\r\n.\r\n", "554 5.6.0"},
		{"header without colon", "Subject a\r\n\r\nbody\r\n.\r\n", "554 5.6.0"},
		{"8-bit header without SMTPUTF8", "Subject: \xe9t\xe9\r\n\r\nbody\r\n.\r\n", "554 5.6.7"},
	} {
		r := start()
		r.cmd("DATA", "354")
		r.send(tc.data)
		if got := r.expect(""); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %s", tc.name, strings.TrimSpace(got), tc.want)
		}
	}
	// A bare CR next to a line end: the data ends at the first CRLF.CRLF
	// and is refused; what follows is read as commands.
	for _, data := range []string{
		"Subject: a\r\n\r\nlast\r\n.\r\r\n.\r\n",
		"Subject: a\r\n\r\nlast\r\r\n.\r\n",
		"Subject: a\r\n\r\nlast\r\n.\rmore\r\n.\r\n",
	} {
		r := start()
		r.cmd("DATA", "354")
		r.send(data + "QUIT\r\n")
		if got := r.expect(""); !strings.HasPrefix(got, "554 5.6.0") {
			t.Errorf("%q: %q, want 554 5.6.0", data, strings.TrimSpace(got))
		}
		r.expect("221")
	}
	// A 10 MB line: refused, and the connection is closed.
	r := start()
	r.cmd("DATA", "354")
	go func() {
		_ = r.conn.SetWriteDeadline(time.Now().Add(cluster.Timeout))
		_, _ = io.WriteString(r.conn, "Subject: a\r\n\r\n"+strings.Repeat("z", 10_000_000)+"\r\n.\r\n")
	}()
	if got := r.expect(""); !strings.HasPrefix(got, "554 5.6.0") {
		t.Errorf("10 MB line: %q, want 554 5.6.0", strings.TrimSpace(got))
	}
	// Missing final dot: the client sends the message and hangs up.
	r = start()
	r.cmd("DATA", "354")
	r.send("Subject: a\r\n\r\nno final dot\r\n")
	r.conn.Close()
	// Vanishing mid-DATA and mid-BDAT.
	r = start()
	r.cmd("DATA", "354")
	r.send("Subject: a\r\n\r\nhalf a li")
	r.conn.Close()
	r = start()
	r.send("BDAT 5000 LAST\r\nSubject: a\r\n\r\nhalf a chunk")
	r.conn.Close()

	// Proof that nothing of the above got in: a good message does, alone.
	cl := dialMX(t, c, 0)
	if err := send(cl, "sender@remote.test", []string{addr("alice")}, strings.NewReader(message("good", "ok"))); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got := mailbox(t, c, i, "alice")
		if len(got) != 1 || len(withSubject(got, "good")) != 1 {
			t.Fatalf("node%d: alice has %d messages, want only the good one", i+1, len(got))
		}
	}
	c.WaitFor("the good message's body on every replica", func() bool {
		for i := range 3 {
			if blobCount(t, c, i) < blobsBefore[i]+1 {
				return false
			}
		}
		return true
	})
	for i := range 3 {
		if n := blobCount(t, c, i); n != blobsBefore[i]+1 {
			t.Fatalf("node%d holds %d new bodies, want 1 (the good message)", i+1, n-blobsBefore[i])
		}
	}
}

// RCPT follows every change acknowledged before it, on whatever node: a
// node still catching up on the log does not deliver by an old rule
// (here: forwarding, and a disabled account).
func TestRecipientRulesAreCurrentOnEveryNode(t *testing.T) {
	c := newCluster(t, func(_ int, cfg *node.Config) { cfg.ProposeTimeout = 1500 * time.Millisecond }, "alice", "bob", "carol")
	lagging := c.Follower()
	others := c.CutOff(lagging)
	s := c.Node(c.LeaderAmong(others)).Store()
	// Setting a rule twice is setting it once: retried across an election.
	cluster.RetryIdempotent(t, "forward alice to bob", func() error {
		return s.SetForwarding(ctxT(t), addr("alice"), []string{addr("bob")}, false)
	})
	cluster.RetryIdempotent(t, "disable carol", func() error {
		return s.SetUserDisabled(ctxT(t), addr("carol"), true)
	})
	c.Heal()
	c.Leader() // the healed node follows again; it may still trail the log
	// An election after the heal may refuse a message for a while (451,
	// not stored): the sender tries again, and every attempt must follow
	// the current rules.
	forwarded := message("forwarded", "x")
	if err := sendPatiently(t, c, lagging, "sender@remote.test", []string{addr("alice")}, forwarded, func() bool {
		return len(withSubject(mailbox(t, c, lagging, "bob"), "forwarded")) > 0
	}); err != nil {
		t.Fatal(err)
	}
	if got := code(sendPatiently(t, c, lagging, "sender@remote.test", []string{addr("carol")}, message("refused", "x"), nil)); got != "550 5.2.1" {
		t.Errorf("mail for the disabled account through the lagging node: %s, want 550 5.2.1", got)
	}
	if n := len(withSubject(mailbox(t, c, lagging, "bob"), "forwarded")); n != 1 {
		t.Errorf("bob has %d copies of the message forwarded from alice, want 1", n)
	}
	if n := len(mailbox(t, c, lagging, "alice")); n != 0 {
		t.Errorf("alice kept %d messages; she forwards without a local copy", n)
	}
}
