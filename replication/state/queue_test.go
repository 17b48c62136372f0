package state

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
)

const sec = int64(time.Second)

func (h *harness) queueEntry(id QueueID) (QueueEntry, error) {
	var e QueueEntry
	err := h.f.View(func(tx *Tx) (err error) {
		e, err = tx.QueueEntry(id)
		return err
	})
	return e, err
}

func (h *harness) mustQueueEntry(id QueueID) QueueEntry {
	h.tb.Helper()
	e, err := h.queueEntry(id)
	if err != nil {
		h.tb.Fatalf("queue entry %s: %v", id, err)
	}
	return e
}

func (h *harness) due() []QueueID {
	h.tb.Helper()
	var out []QueueID
	h.view(func(tx *Tx) error {
		return tx.QueueDue(tx.QueueNow(), 0, func(e QueueEntry) error {
			out = append(out, e.ID)
			return nil
		})
	})
	return out
}

func (h *harness) queueLen() int {
	var n int
	h.view(func(tx *Tx) error { n = tx.QueueLen(); return nil })
	return n
}

func (h *harness) tick(at int64) { must[Done](h, &QueueTick{Time: at}) }

// enqueue delivers blob n to alice's INBOX and to the remote recipients,
// and returns the queue IDs.
func (h *harness) enqueue(n int, local bool, to ...string) []QueueID {
	h.tb.Helper()
	c := &Deliver{Blob: blobID(n), Size: 100, Summary: []byte("s")}
	if local {
		c.Targets = []DeliverTarget{{Account: "alice@example.org"}}
	}
	for _, addr := range to {
		c.Remote = append(c.Remote, QueueTarget{From: "alice@example.org", To: addr, Notify: NotifyFailure | NotifyDelay,
			Ret: "HDRS", EnvID: "env1", Account: "alice@example.org", Expires: t0 + 5*86400*sec, DelayDSNAt: t0 + 4*3600*sec})
	}
	r := must[DeliverResult](h, c)
	for _, tr := range r.Targets {
		if tr.Err() != nil {
			h.tb.Fatalf("local target: %v", tr.Err())
		}
	}
	if len(r.Queued) != len(to) {
		h.tb.Fatalf("queued %v for %d remote recipients", r.Queued, len(to))
	}
	// The leader's clock task ticks once entries exist: only then are they
	// claimable (see clockReadSince).
	var now int64
	h.view(func(tx *Tx) error { now = tx.QueueNow(); return nil })
	h.tick(now)
	return r.Queued
}

// A message for local and outside recipients is one commit: the local
// copy, a queue entry per outside recipient, and a blob reference for each.
func TestDeliverWithRemoteTargetsIsOneCommit(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	ids := h.enqueue(1, true, "carol@remote.test", "dave@remote.test")
	// The index before the tick that enqueue applies.
	if ids[0].Index != h.index-1 || ids[0].N != 0 || ids[1] != (QueueID{Index: h.index - 1, N: 1}) {
		t.Fatalf("queue IDs %v at index %d", ids, h.index)
	}
	e := h.mustQueueEntry(ids[1])
	want := QueueEntry{ID: ids[1], Blob: blobID(1), Size: 100, From: "alice@example.org", To: "dave@remote.test",
		Notify: NotifyFailure | NotifyDelay, Ret: "HDRS", EnvID: "env1", Account: "alice@example.org",
		Created: h.now - sec /* the Deliver's time, before enqueue's tick */, Expires: t0 + 5*86400*sec, DelayDSNAt: t0 + 4*3600*sec, NextAttempt: t0}
	if e != want {
		t.Fatalf("entry\n %+v\nwant\n %+v", e, want)
	}
	if b, _ := h.blob(blobID(1)); b.Refs != 3 {
		t.Fatalf("blob refs %d, want 3 (one copy, two queue entries)", b.Refs)
	}
	if got := h.due(); !slices.Equal(got, ids) {
		t.Fatalf("due %v, want %v", got, ids)
	}
	if n := h.queueLen(); n != 2 {
		t.Fatalf("queue length %d", n)
	}
	if mb := h.mailbox("alice@example.org", Inbox); mb.Messages != 1 {
		t.Fatalf("INBOX has %d messages", mb.Messages)
	}
	// Text form round-trips.
	if p, err := ParseQueueID(ids[1].String()); err != nil || p != ids[1] {
		t.Fatalf("ParseQueueID(%q) = %v, %v", ids[1], p, err)
	}
	// An invalid remote target refuses the whole command.
	r := h.do(&Deliver{Blob: blobID(2), Size: 1, Targets: []DeliverTarget{{Account: "bob@example.org"}}, Remote: []QueueTarget{{To: ""}}})
	if !errors.Is(r.Err(), ErrInvalidArgument) {
		t.Fatalf("empty To: %v", r.Err())
	}
	if mb := h.mailbox("bob@example.org", Inbox); mb.Messages != 0 {
		t.Fatal("a refused delivery stored a local copy")
	}
}

// A Deliver entry written before the queue existed (its bytes spelled out)
// applies as before, and its result bytes are unchanged.
func TestDeliverOfThePreviousVersionStillApplies(t *testing.T) {
	h := newHarness(t)
	h.setup()
	blob := blobID(3).String()
	data := []byte("\x40" + `{"t":1700000000000000000,"blob":"` + blob + `","size":12,"targets":[{"account":"alice@example.org"}]}`)
	h.index++
	raw, err := h.f.Apply([]consensus.Entry{{Index: h.index, Term: 1, Data: data}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "\x04" + `{"targets":[{"mailbox":1,"uidvalidity":`; !bytes.HasPrefix(raw[0], []byte(want)) || bytes.Contains(raw[0], []byte("queued")) {
		t.Fatalf("result %q", raw[0])
	}
	if h.queueLen() != 0 {
		t.Fatal("an old delivery queued something")
	}
}

// The lease: granted only when due and unleased; a second claim before
// expiry is refused; once the queue clock passes Until another node's
// claim wins with a new token, and the old token can neither renew nor
// report.
func TestClaimLeaseAndFencing(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	id := h.enqueue(1, false, "carol@remote.test")[0]

	c1 := must[ClaimResult](h, &QueueClaim{Node: "n2", IDs: []QueueID{id, {Index: 999}}, Lease: 10 * sec})
	if c1.Token != h.index || !slices.Equal(c1.Granted, []QueueID{id}) {
		t.Fatalf("first claim %+v at index %d", c1, h.index)
	}
	e := h.mustQueueEntry(id)
	if e.Lease != (Lease{Holder: "n2", Token: c1.Token, Until: t0 + 10*sec}) || e.Attempts != 1 {
		t.Fatalf("after claim: %+v", e)
	}
	if len(h.due()) != 0 {
		t.Fatal("a leased entry is listed as due")
	}
	// Before expiry: refused, even a moment before.
	h.tick(t0 + 10*sec - 1)
	if c := must[ClaimResult](h, &QueueClaim{Node: "n3", IDs: []QueueID{id}, Lease: 10 * sec}); len(c.Granted) != 0 {
		t.Fatalf("second claim before expiry granted: %+v", c)
	}
	// The holder renews: Until moves on from the queue clock.
	if r := must[RenewResult](h, &QueueRenew{Token: c1.Token, IDs: []QueueID{id}, Lease: 10 * sec}); !slices.Equal(r.Held, []QueueID{id}) {
		t.Fatalf("renewal: %+v", r)
	}
	if e := h.mustQueueEntry(id); e.Lease.Until != t0+20*sec-1 {
		t.Fatalf("renewed until %d", e.Lease.Until-t0)
	}
	// The queue clock passes Until: another node's claim wins.
	h.tick(t0 + 20*sec - 1)
	if got := h.due(); !slices.Equal(got, []QueueID{id}) {
		t.Fatalf("due after expiry %v", got)
	}
	c2 := must[ClaimResult](h, &QueueClaim{Node: "n3", IDs: []QueueID{id}, Lease: 10 * sec})
	if !slices.Equal(c2.Granted, []QueueID{id}) || c2.Token == c1.Token || c2.Token != h.index {
		t.Fatalf("claim after expiry %+v (first token %d)", c2, c1.Token)
	}

	// The old holder, late: its renewal and its report change nothing.
	before := dump(t, h.f)
	if r := must[RenewResult](h, &QueueRenew{Token: c1.Token, IDs: []QueueID{id}, Lease: 10 * sec}); len(r.Held) != 0 {
		t.Fatalf("stale renewal held %v", r.Held)
	}
	rep := must[ReportResult](h, &QueueReport{Token: c1.Token, Outcomes: []QueueOutcome{{ID: id, Kind: OutcomeDelivered, Reply: "250 ok"},
		{ID: QueueID{Index: 999}, Kind: OutcomeFailed}}})
	if !errors.Is(rep.Outcomes[0].Err(), ErrStaleLease) || !errors.Is(rep.Outcomes[1].Err(), ErrNoSuchQueueEntry) {
		t.Fatalf("stale report: %+v", rep)
	}
	if after := dump(t, h.f); withoutDedupAndApplied(after) != withoutDedupAndApplied(before) {
		t.Fatalf("a stale renewal or report changed the state:\n%s\n%s", before, after)
	}
	if e := h.mustQueueEntry(id); e.Lease.Token != c2.Token || e.Attempts != 2 {
		t.Fatalf("entry after stale report %+v", e)
	}

	// Deferred by the holder: lease cleared, not due until NextAttempt.
	must[ReportResult](h, &QueueReport{Token: c2.Token, Outcomes: []QueueOutcome{{ID: id, Kind: OutcomeDeferred,
		Reply: "451 4.3.0 try later", Host: "mx.remote.test", NextAttempt: t0 + 300*sec}}})
	e = h.mustQueueEntry(id)
	if e.Lease != (Lease{}) || e.NextAttempt != t0+300*sec || e.LastReply != "451 4.3.0 try later" || e.LastHost != "mx.remote.test" {
		t.Fatalf("deferred entry %+v", e)
	}
	if c := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: []QueueID{id}, Lease: 10 * sec}); len(c.Granted) != 0 {
		t.Fatal("claim granted before the next attempt is due")
	}
	if must[RenewResult](h, &QueueRenew{Token: c2.Token, IDs: []QueueID{id}, Lease: sec}).Held != nil {
		t.Fatal("a renewal after the report still holds the entry")
	}
	h.tick(t0 + 300*sec)
	if c := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: []QueueID{id, id}, Lease: 10 * sec}); !slices.Equal(c.Granted, []QueueID{id}) {
		t.Fatalf("claim at the next attempt: %+v", c)
	}
	// The clock never goes back.
	h.tick(t0)
	var now int64
	h.view(func(tx *Tx) error { now = tx.QueueNow(); return nil })
	if now != t0+300*sec {
		t.Fatalf("queue clock went back to %d", now-t0)
	}
	for _, bad := range []Command{
		&QueueClaim{Node: "", IDs: []QueueID{id}, Lease: sec},
		&QueueClaim{Node: "n1", IDs: []QueueID{id}, Lease: 0},
		&QueueRenew{Token: 0, IDs: []QueueID{id}, Lease: sec},
		&QueueReport{Token: 0},
		&QueueReport{Token: 1, Outcomes: []QueueOutcome{{ID: id, Kind: 9}}},
		&QueueAdmin{Op: "flush", IDs: []QueueID{id}},
	} {
		if r := h.do(bad); !errors.Is(r.Err(), ErrInvalidArgument) {
			t.Errorf("%T %+v: %v", bad, bad, r.Err())
		}
	}
}

// withoutDedupAndApplied drops what every applied entry writes (its
// applied index and its proposal ID) from a dump.
func withoutDedupAndApplied(d string) string {
	out := withoutApplied(d)
	var keep []byte
	section := ""
	for _, line := range bytes.Split([]byte(out), []byte("\n")) {
		if bytes.HasPrefix(line, []byte("[")) {
			section = string(line)
		}
		if (section == "[dedup]" || section == "[dedup_index]") && !bytes.HasPrefix(line, []byte("[")) {
			continue
		}
		keep = append(keep, line...)
		keep = append(keep, '\n')
	}
	return string(keep)
}

// Delivered and Failed remove the entry and its reference: the body becomes
// purgeable only when no message and no queue entry refers to it.
func TestReportedEntriesReleaseTheBody(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	ids := h.enqueue(1, true, "carol@remote.test", "dave@remote.test")
	purge := func() []BlobID {
		return must[PurgeResult](h, &PurgeBlobs{Before: t0 + 1000*86400*sec}).Blobs
	}
	// The local copy goes: the queue still holds the body.
	inbox := h.mailbox("alice@example.org", Inbox)
	must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSet{{1, 1}}})
	if got := purge(); len(got) != 0 {
		t.Fatalf("purged %v while queued", got)
	}
	tok := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: ids, Lease: 30 * sec}).Token
	must[ReportResult](h, &QueueReport{Token: tok, Outcomes: []QueueOutcome{{ID: ids[0], Kind: OutcomeDelivered, Reply: "250 2.0.0 ok"}}})
	if _, err := h.queueEntry(ids[0]); !errors.Is(err, ErrNoSuchQueueEntry) {
		t.Fatalf("delivered entry: %v", err)
	}
	if b, _ := h.blob(blobID(1)); b.Refs != 1 {
		t.Fatalf("refs %d after one delivered", b.Refs)
	}
	if got := purge(); len(got) != 0 {
		t.Fatalf("purged %v while one recipient is queued", got)
	}
	must[ReportResult](h, &QueueReport{Token: tok, Outcomes: []QueueOutcome{{ID: ids[1], Kind: OutcomeFailed, Reply: "550 5.1.1 no such user"}}})
	if h.queueLen() != 0 {
		t.Fatal("queue not empty")
	}
	if got := purge(); !slices.Equal(got, []BlobID{blobID(1)}) {
		t.Fatalf("purged %v, want the body", got)
	}
}

// A failed report's bounce lands in the sender's INBOX in the same
// transaction; a bounce to an outside sender is queued with a null sender;
// a refused report stores no bounce.
func TestFailedReportStoresTheBounce(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	ids := h.enqueue(1, false, "carol@remote.test", "dave@remote.test")
	tok := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: ids, Lease: 30 * sec}).Token
	dsn := &Bounce{Kind: BounceFailed, Blob: blobID(7), Size: 55, Summary: []byte("dsn"), Local: []DeliverTarget{{Account: "alice@example.org"}}}

	// A stale token: refused, and its bounce is not stored.
	rep := must[ReportResult](h, &QueueReport{Token: tok + 1, Outcomes: []QueueOutcome{{ID: ids[0], Kind: OutcomeFailed, Bounce: dsn}}})
	if !errors.Is(rep.Outcomes[0].Err(), ErrStaleLease) || rep.Outcomes[0].Targets != nil {
		t.Fatalf("stale report %+v", rep)
	}
	if _, err := h.blob(blobID(7)); !errors.Is(err, ErrNoSuchBlob) {
		t.Fatal("a refused report stored its bounce")
	}

	reportIndex := h.index + 1
	rep = must[ReportResult](h, &QueueReport{Token: tok, Outcomes: []QueueOutcome{
		{ID: ids[0], Kind: OutcomeFailed, Reply: "550 5.1.1 unknown", Bounce: dsn},
		{ID: ids[1], Kind: OutcomeFailed, Reply: "550 5.1.1 unknown", Bounce: &Bounce{Kind: BounceFailed, Blob: blobID(8), Size: 60,
			Remote: []QueueTarget{{To: "someone@elsewhere.test", Expires: t0 + 86400*sec}}}},
	}})
	if h.index != reportIndex {
		t.Fatal("the report was not one entry")
	}
	o := rep.Outcomes[0]
	if o.Err() != nil || len(o.Targets) != 1 || o.Targets[0].Err() != nil || o.Targets[0].UID != 1 {
		t.Fatalf("bounce outcome %+v", o)
	}
	var msg Message
	h.view(func(tx *Tx) (err error) {
		mb, err := tx.Mailbox("alice@example.org", Inbox)
		if err != nil {
			return err
		}
		msg, err = tx.Message(mb.ID, 1)
		return err
	})
	if msg.Blob != blobID(7) || msg.Size != 55 || msg.ModSeq != reportIndex {
		t.Fatalf("INBOX message %+v", msg)
	}
	q := rep.Outcomes[1].Queued
	if len(q) != 1 || q[0] != (QueueID{Index: reportIndex, N: 0}) {
		t.Fatalf("queued bounce %v", q)
	}
	e := h.mustQueueEntry(q[0])
	if e.From != "" || e.To != "someone@elsewhere.test" || e.Blob != blobID(8) || e.NextAttempt != t0 {
		t.Fatalf("queued bounce entry %+v", e)
	}
	if h.queueLen() != 1 {
		t.Fatalf("queue length %d, want the bounce only", h.queueLen())
	}
	if b, _ := h.blob(blobID(1)); b.Refs != 0 {
		t.Fatalf("original body refs %d", b.Refs)
	}
}

// A deferred report with a delayed DSN marks the entry, so the DSN is sent
// once.
func TestDelayedBounceIsMarked(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	id := h.enqueue(1, false, "carol@remote.test")[0]
	tok := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: []QueueID{id}, Lease: 30 * sec}).Token
	must[ReportResult](h, &QueueReport{Token: tok, Outcomes: []QueueOutcome{{ID: id, Kind: OutcomeDeferred, NextAttempt: t0 + 600*sec,
		Bounce: &Bounce{Kind: BounceDelayed, Blob: blobID(9), Size: 10, Local: []DeliverTarget{{Account: "alice@example.org"}}}}}})
	if e := h.mustQueueEntry(id); !e.DelayDSNSent || e.Lease.Token != 0 {
		t.Fatalf("entry %+v", e)
	}
	if mb := h.mailbox("alice@example.org", Inbox); mb.Messages != 1 {
		t.Fatalf("INBOX %d messages", mb.Messages)
	}
}

func TestQueueAdmin(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0)
	ids := h.enqueue(1, false, "a@remote.test", "b@remote.test", "c@remote.test")
	tok := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: ids, Lease: 30 * sec}).Token
	must[ReportResult](h, &QueueReport{Token: tok, Outcomes: []QueueOutcome{
		{ID: ids[0], Kind: OutcomeDeferred, NextAttempt: t0 + 3600*sec},
		{ID: ids[1], Kind: OutcomeDeferred, NextAttempt: t0 + 3600*sec},
	}})
	h.tick(t0 + 5*sec)
	// retry: due now. ids[2] is still leased (its attempt runs): it keeps
	// its lease, so no second node starts on it.
	res := must[QueueAdminResult](h, &QueueAdmin{Op: QueueRetry, IDs: []QueueID{ids[0], ids[2], {Index: 12345}}})
	if !slices.Equal(res.Changed, []QueueID{ids[0], ids[2]}) {
		t.Fatalf("retry changed %v", res.Changed)
	}
	if got := h.due(); !slices.Equal(got, []QueueID{ids[0]}) {
		t.Fatalf("due after retry %v", got)
	}
	if e := h.mustQueueEntry(ids[2]); e.Lease.Token != tok {
		t.Fatalf("retry dropped a running lease: %+v", e)
	}
	// bounce: due now, marked.
	must[QueueAdminResult](h, &QueueAdmin{Op: QueueBounce, IDs: []QueueID{ids[1]}})
	if e := h.mustQueueEntry(ids[1]); !e.Bounce || e.NextAttempt != t0+5*sec {
		t.Fatalf("bounced entry %+v", e)
	}
	// delete: gone, reference released.
	must[QueueAdminResult](h, &QueueAdmin{Op: QueueDelete, IDs: ids})
	if h.queueLen() != 0 {
		t.Fatal("delete left entries")
	}
	if b, _ := h.blob(blobID(1)); b.Refs != 0 {
		t.Fatalf("refs %d after delete", b.Refs)
	}
}

// Replaying the log after a restart changes nothing, results included;
// snapshots carry the queue.
func TestQueueReplayIsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var log []consensus.Entry
	var results [][]byte
	run := func(cmd Command) {
		e := h.entry(cmd)
		raw, err := h.f.Apply([]consensus.Entry{e})
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, e)
		results = append(results, raw[0])
	}
	run(&QueueTick{Time: t0})
	run(&Deliver{Blob: blobID(1), Size: 10, Remote: []QueueTarget{{To: "a@remote.test"}, {To: "b@remote.test"}}})
	id := QueueID{Index: h.index}
	run(&QueueClaim{Node: "n1", IDs: []QueueID{id, {Index: id.Index, N: 1}}, Lease: 10 * sec})
	tok := h.index
	run(&QueueRenew{Token: tok, IDs: []QueueID{id}, Lease: 10 * sec})
	run(&QueueReport{Token: tok, Outcomes: []QueueOutcome{{ID: id, Kind: OutcomeFailed,
		Bounce: &Bounce{Kind: BounceFailed, Blob: blobID(2), Size: 5, Local: []DeliverTarget{{Account: "bob@example.org"}}}}}})
	run(&QueueTick{Time: t0 + 11*sec})
	run(&QueueAdmin{Op: QueueRetry, IDs: []QueueID{{Index: id.Index, N: 1}}})
	before := dump(t, h.f)

	h.reopen()
	h.takeEvents()
	raw, err := h.f.Apply(log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		if !bytes.Equal(raw[i], results[i]) {
			t.Fatalf("replayed entry %d: %s, want %s", i, raw[i], results[i])
		}
	}
	if len(h.takeEvents()) != 0 || dump(t, h.f) != before {
		t.Fatal("replay changed something")
	}

	// Another node applying the same log one entry at a time, after the
	// same setup, ends byte-identical.
	other := newHarness(t)
	other.setup()
	for _, e := range log {
		if _, err := other.f.Apply([]consensus.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if dump(t, other.f) != before {
		t.Fatal("a replica differs")
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	restored := newHarness(t)
	if err := restored.f.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if dump(t, restored.f) != before {
		t.Fatal("restored state differs")
	}
	if e := restored.mustQueueEntry(QueueID{Index: id.Index, N: 1}); e.Lease.Token != 0 || e.To != "b@remote.test" {
		t.Fatalf("restored entry %+v", e)
	}
}

// Queue events tell a worker when there is work: new entries and retries
// (QueueChanged) and a clock that moved (QueueTicked).
func TestQueueEvents(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.takeEvents()
	h.tick(t0)
	if ev := h.takeEvents(); len(ev) != 1 || ev[0] != (QueueTicked{Index: h.index, Now: t0}) {
		t.Fatalf("tick events %#v", ev)
	}
	h.tick(t0) // no change, no event
	if ev := h.takeEvents(); len(ev) != 0 {
		t.Fatalf("an idle tick emitted %#v", ev)
	}
	ids := h.enqueue(1, false, "a@remote.test")
	ev := h.takeEvents()
	if len(ev) != 1 {
		t.Fatalf("enqueue events %#v", ev)
	}
	if qc, ok := ev[0].(QueueChanged); !ok || !slices.Equal(qc.Due, ids) {
		t.Fatalf("enqueue event %#v", ev[0])
	}
}

// Whatever a proposer puts in a queue command decodes on every node: a
// zero or unknown ID is skipped by Apply, it never stops the state machine.
func TestQueueCommandsRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.setup()
	odd := []QueueID{{}, {Index: 1<<64 - 1, N: 1<<16 - 1}}
	for _, cmd := range []Command{
		&QueueClaim{Time: 1, Node: "n1", IDs: odd, Lease: sec},
		&QueueRenew{Time: 1, Token: 3, IDs: odd, Lease: sec},
		&QueueReport{Time: 1, Token: 3, Outcomes: []QueueOutcome{{ID: odd[0], Kind: OutcomeFailed, Bounce: &Bounce{Kind: BounceFailed, Blob: blobID(1), Remote: []QueueTarget{{To: "x@y.test"}}}}}},
		&QueueAdmin{Time: 1, Op: QueueDelete, IDs: odd},
		&Deliver{Time: 1, Blob: blobID(1), Size: 1, Remote: []QueueTarget{{From: "", To: "x@y.test", ORCPT: "rfc822;x@y.test", Notify: NotifyNever, Ret: "FULL", EnvID: "e", UTF8: true}}},
	} {
		data, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(data)
		if err != nil {
			t.Fatalf("%T does not decode: %v", cmd, err)
		}
		if again, _ := Encode(back); !bytes.Equal(again, data) {
			t.Fatalf("%T: %s re-encodes as %s", cmd, data, again)
		}
		h.do(cmd) // applies (refused or not) without stopping
	}
	if _, err := ParseQueueID("0.0"); err == nil {
		t.Fatal("ParseQueueID accepted index 0")
	}
	for _, bad := range []string{"", "1", "1.", ".1", "1.65536", "x.1", "1.-1"} {
		if _, err := ParseQueueID(bad); err == nil {
			t.Errorf("ParseQueueID(%q) accepted", bad)
		}
	}
}

// Entries are claimed only once the queue clock was written after they
// were created. The leader ticks only while the queue has entries, so
// after a quiet spell the clock can be far behind: a lease reckoned from
// it would have run out at the next tick, and another node could send the
// message again while the first still is (seen in make bench: messages
// sent twice after the queue had been empty a while).
func TestEntriesWaitForATickAfterTheyWereQueued(t *testing.T) {
	h := newHarness(t)
	h.setup()
	h.tick(t0) // the last tick, long ago
	c := &Deliver{Blob: blobID(1), Size: 100, Summary: []byte("s"),
		Remote: []QueueTarget{{From: "alice@example.org", To: "carol@remote.test", Expires: t0 + 86400*sec}}}
	id := must[DeliverResult](h, c).Queued[0]
	if due := h.due(); len(due) != 0 {
		t.Fatalf("due before any tick since it was queued: %v", due)
	}
	if got := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: []QueueID{id}, Lease: 10 * sec}); len(got.Granted) != 0 {
		t.Fatalf("claimed with the stale clock: %+v", got)
	}
	later := t0 + 3600*sec // the leader's clock, an hour on
	h.tick(later)
	got := must[ClaimResult](h, &QueueClaim{Node: "n1", IDs: []QueueID{id}, Lease: 10 * sec})
	if len(got.Granted) != 1 {
		t.Fatalf("not claimed after a tick: %+v", got)
	}
	if e := h.mustQueueEntry(id); e.Lease.Until != later+10*sec {
		t.Fatalf("lease until %d, want the fresh clock + lease %d", e.Lease.Until, later+10*sec)
	}
	// The next second's tick does not free it for another node.
	h.tick(later + sec)
	if got := must[ClaimResult](h, &QueueClaim{Node: "n2", IDs: []QueueID{id}, Lease: 10 * sec}); len(got.Granted) != 0 {
		t.Fatalf("a second node claimed a lease still running: %+v", got)
	}
}
