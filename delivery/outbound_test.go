package delivery

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/mailauth/srs"
	"github.com/mailcluster/mailcluster/replication/state"
)

var outboundNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func outboundPipeline(f *fakeStore) (*Pipeline, *srs.Rewriter) {
	rw := srs.New([]byte("cluster secret for the tests"), func() time.Time { return outboundNow })
	return New(Config{Store: f, Outbound: &Outbound{
		Expiry: 5 * 24 * time.Hour, DelayDSN: 4 * time.Hour, SRS: rw,
		Now: func() time.Time { return outboundNow },
	}}), rw
}

// deliverTo runs one whole delivery and returns what was committed.
func deliverTo(t *testing.T, f *fakeStore, p *Pipeline, env Envelope, rcpts map[string]RecipientDSN) fakeDelivery {
	t.Helper()
	d, err := p.Begin(ctx(t), env)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, 0, len(rcpts))
	for a := range rcpts {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		if err := d.AddRecipientDSN(ctx(t), a, rcpts[a]); err != nil {
			t.Fatalf("RCPT %s: %v", a, err)
		}
	}
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit(ctx(t)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.delivered) == 0 {
		t.Fatal("nothing committed")
	}
	return f.delivered[len(f.delivered)-1]
}

// A submission with local and outside recipients is one commit: the
// local copies and a queue entry per outside recipient, with the DSN
// parameters the client gave and the expiry and delayed-DSN times.
func TestSubmissionQueuesOutsideRecipientsInTheSameCommit(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	p, _ := outboundPipeline(f)
	got := deliverTo(t, f, p, Envelope{
		Source: SourceSubmission, Account: "alice@example.test", Sender: "alice@example.test",
		Ret: "HDRS", EnvID: "env-1",
	}, map[string]RecipientDSN{
		"bob@example.test":    {},
		"carol@outside.test":  {Notify: state.NotifyFailure | state.NotifyDelay, ORCPT: "rfc822;carol@outside.test"},
		"dave@elsewhere.test": {Notify: state.NotifyNever},
	})
	if len(got.rcpts) != 1 || got.rcpts[0].Account != "bob@example.test" {
		t.Fatalf("local copies %v, want bob", got.rcpts)
	}
	if len(got.remote) != 2 {
		t.Fatalf("queued %v, want carol and dave", got.remote)
	}
	carol, dave := got.remote[0], got.remote[1]
	if carol.To != "carol@outside.test" || carol.From != "alice@example.test" || carol.Account != "alice@example.test" ||
		carol.Ret != "HDRS" || carol.EnvID != "env-1" || carol.ORCPT != "rfc822;carol@outside.test" ||
		carol.Notify != state.NotifyFailure|state.NotifyDelay {
		t.Fatalf("carol's entry %+v", carol)
	}
	if want := outboundNow.Add(5 * 24 * time.Hour).UnixNano(); carol.Expires != want {
		t.Fatalf("expires %d, want %d", carol.Expires, want)
	}
	if want := outboundNow.Add(4 * time.Hour).UnixNano(); carol.DelayDSNAt != want {
		t.Fatalf("delayed DSN at %d, want %d", carol.DelayDSNAt, want)
	}
	if dave.To != "dave@elsewhere.test" || dave.DelayDSNAt != 0 {
		t.Fatalf("NOTIFY=NEVER still asks for a delayed DSN: %+v", dave)
	}
}

// Forwarding to an outside address queues the copy with an SRS sender, so
// the destination's SPF check passes; a bounce to that SRS address goes
// back to the original sender. The null sender and the cluster's own
// addresses are sent as they are.
func TestForwardingOutsideUsesSRSAndBouncesComeBack(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.change(true, func(r *rules) {
		r.aliases["fwd@example.test"] = []string{"alice@example.test", "friend@outside.test"}
	})
	p, rw := outboundPipeline(f)

	got := deliverTo(t, f, p, Envelope{Source: SourceMX, Sender: "someone@remote.test"}, map[string]RecipientDSN{"fwd@example.test": {}})
	if len(got.rcpts) != 1 || len(got.remote) != 1 {
		t.Fatalf("forward: local %v, queued %v", got.rcpts, got.remote)
	}
	from := got.remote[0].From
	if !strings.HasPrefix(strings.ToUpper(from), "SRS0=") || !strings.HasSuffix(from, "@example.test") {
		t.Fatalf("forwarded with envelope sender %q, want an SRS0 address of example.test", from)
	}
	if orig, ok, err := rw.Reverse(from); err != nil || !ok || orig != "someone@remote.test" {
		t.Fatalf("SRS reverse of %q: %q %v %v", from, orig, ok, err)
	}

	// The destination bounces: null sender, to the SRS address.
	back := deliverTo(t, f, p, Envelope{Source: SourceMX, Sender: ""}, map[string]RecipientDSN{from: {}})
	if len(back.rcpts) != 0 || len(back.remote) != 1 || back.remote[0].To != "someone@remote.test" || back.remote[0].From != "" {
		t.Fatalf("bounce to the SRS address: local %v, queued %+v; want it queued to someone@remote.test with a null sender", back.rcpts, back.remote)
	}

	// A tampered SRS address is nobody.
	d := mx(t, p)
	bad := "SRS0=AAAAAA" + from[strings.IndexByte(from[5:], '=')+5:]
	if err := d.AddRecipient(ctx(t), bad); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("tampered SRS address %q: %v, want ErrNoSuchUser", bad, err)
	}

	// Mail from a local sender and bounces are forwarded unrewritten.
	got = deliverTo(t, f, p, Envelope{Source: SourceSubmission, Account: "alice@example.test", Sender: "alice@example.test"}, map[string]RecipientDSN{"fwd@example.test": {}})
	if got.remote[0].From != "alice@example.test" {
		t.Fatalf("a local sender forwarded as %q", got.remote[0].From)
	}
	got = deliverTo(t, f, p, Envelope{Source: SourceMX, Sender: ""}, map[string]RecipientDSN{"fwd@example.test": {}})
	if got.remote[0].From != "" {
		t.Fatalf("a bounce forwarded with sender %q", got.remote[0].From)
	}
}

// Another server may still not relay through the cluster.
func TestMXStillRefusesRelayWithAQueue(t *testing.T) {
	f := newFakeStore()
	p, _ := outboundPipeline(f)
	if err := mx(t, p).AddRecipient(ctx(t), "x@elsewhere.test"); !errors.Is(err, ErrRelayDenied) {
		t.Fatalf("relay through the MX: %v, want ErrRelayDenied", err)
	}
}

// A message that has passed too many servers is a loop: refused with
// 5.4.6, nothing committed.
func TestHopCheckRefusesALoop(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	p := New(Config{Store: f})
	for _, tc := range []struct {
		hops int
		loop bool
	}{{maxHops, false}, {maxHops + 1, true}} {
		var msg strings.Builder
		for i := range tc.hops {
			fmt.Fprintf(&msg, "Received: from hop%d.test by hop%d.test; Fri, 4 Dec 2026 12:00:00 +0000\r\n", i, i+1)
		}
		msg.WriteString("Subject: round and round\r\n\r\nhello\r\n")
		d := mx(t, p)
		if err := d.AddRecipient(ctx(t), "alice@example.test"); err != nil {
			t.Fatal(err)
		}
		if err := d.Body(ctx(t), strings.NewReader(msg.String()), 0); err != nil {
			t.Fatal(err)
		}
		_, err := d.Commit(ctx(t))
		var rej *RejectedError
		switch {
		case tc.loop && (!errors.As(err, &rej) || !rej.Permanent || rej.Enhanced != "5.4.6"):
			t.Fatalf("%d hops: %v, want a permanent 5.4.6 refusal", tc.hops, err)
		case !tc.loop && err != nil:
			t.Fatalf("%d hops: %v, want it delivered", tc.hops, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.delivered) != 1 {
		t.Fatalf("%d commits, want 1 (the loop committed nothing)", len(f.delivered))
	}
}

// When every local copy fails at the commit (a quota filled meanwhile) but
// outside recipients were queued in the same command, the message is on
// its way out: the answer is "partial" (retry), never "not stored".
func TestLocalFailureWithQueuedRecipientsIsPartial(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	f.results["bob@example.test"] = state.CodeQuotaExceeded // full by the time of the commit
	p, _ := outboundPipeline(f)
	d, err := p.Begin(ctx(t), Envelope{Source: SourceSubmission, Account: "alice@example.test", Sender: "alice@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"bob@example.test", "carol@outside.test"} {
		if err := d.AddRecipient(ctx(t), a); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit(ctx(t)); !errors.Is(err, ErrPartial) {
		t.Fatalf("commit: %v, want ErrPartial (carol's copy is queued)", err)
	}
}
