package inbound_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/simnet"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// Node indexes of the sender-authentication cluster: mail from outside
// comes in through mx, is read back through reader; junker has
// dmarc_reject "junk", the others the default "reject".
const (
	mx     = 0
	reader = 1
	junker = 2
)

// Sender authentication through the MX port of a real cluster: SPF, DKIM
// (signed by dkimpy), DMARC policies and their alignment, our own domain
// claimed from outside, forged Authentication-Results, submissions, and
// the verdict counters. One cluster for all of it.
func TestSenderAuthentication(t *testing.T) {
	t.Parallel()
	c := newCluster(t, func(i int, cfg *node.Config) {
		if i == junker {
			cfg.Inbound.DMARCReject = "junk"
		}
	}, "alice", "bob")
	sig := newSigner(t, "sel")
	// relay.test is a sender whose SPF passes for our client address but
	// that is not the From domain: it authenticates nothing DMARC aligns.
	setDNS(t, c, "relay.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")

	t.Run("dkim", func(t *testing.T) {
		const d = "signed.test"
		sig.publish(c, d)
		m := newMeter(t, c, mx)
		signed := sig.sign(message("Alice <alice@signed.test>", "dkim signed", "First line.\r\nSecond line."), d)
		mustAccept(t, "signed", sendMX(t, c, mx, "alice@"+d, []string{addr("alice")}, "dkim signed", signed))
		ar := ours(t, storedIn(t, c, reader, "alice", "dkim signed", "INBOX"))
		wantResult(t, ar, "dkim=pass header.d=signed.test header.i=@signed.test header.s=sel")
		wantResult(t, ar, "spf=none smtp.mailfrom=alice@signed.test")
		wantResult(t, ar, "dmarc=none header.from=signed.test")
		m.grew(t, "dkim/pass", "spf/none", "dmarc/none")

		// The same message altered after signing (its body, then a signed
		// header field, the subject kept findable).
		for _, tc := range []struct{ subject, from, to string }{
			{"dkim body altered", "Second line.", "Second line!"},
			{"dkim header altered", "Date: Mon, 07 Dec 2026 10:00:00", "Date: Mon, 07 Dec 2026 11:00:00"},
		} {
			msg := sig.sign(message("Alice <alice@signed.test>", tc.subject, "First line.\r\nSecond line."), d)
			altered := strings.Replace(msg, tc.from, tc.to, 1)
			if altered == msg {
				t.Fatalf("%s: nothing altered", tc.subject)
			}
			mustAccept(t, tc.subject, sendMX(t, c, mx, "alice@"+d, []string{addr("alice")}, tc.subject, altered))
			ar := ours(t, storedIn(t, c, reader, "alice", tc.subject, "INBOX"))
			wantResult(t, ar, "dkim=fail header.d=signed.test")
			if r := result(ar, "dkim"); !strings.Contains(r, "reason=") {
				t.Errorf("%s: dkim result %q gives no reason", tc.subject, r)
			}
			m.grew(t, "dkim/fail")
		}
	})

	t.Run("dkim large", func(t *testing.T) {
		// Larger than what is inspected in memory (the rest is spooled to
		// a file): verified over all of it, a forged field still removed.
		const d, subject = "signed-large.test", "dkim large"
		sig.publish(c, d)
		body := strings.Repeat("A line of a long message, to be verified to its end.\r\n", 8000)
		signed := sig.sign(message("<big@signed-large.test>", subject, body,
			"Authentication-Results: "+authServID+"; dkim=pass header.d=bank.test"), d)
		if len(signed) < 400<<10 {
			t.Fatalf("the message is only %d bytes", len(signed))
		}
		mustAccept(t, subject, sendMX(t, c, mx, "big@"+d, []string{addr("alice")}, subject, signed))
		stored := storedIn(t, c, reader, "alice", subject, "INBOX")
		ar := ours(t, stored)
		wantResult(t, ar, "dkim=pass header.d="+d)
		if !strings.HasSuffix(stored, body+"\r\n") {
			t.Errorf("the stored body is not the one sent (%d bytes stored)", len(stored))
		}
	})

	t.Run("spf", func(t *testing.T) {
		m := newMeter(t, c, mx)
		for _, tc := range []struct {
			domain, record string
			failure        simnet.Failure
			want           string
		}{
			{domain: "spf-pass.test", record: "v=spf1 ip4:127.0.0.1 -all", want: "pass"},
			{domain: "spf-fail.test", record: "v=spf1 -all", want: "fail"},
			{domain: "spf-soft.test", record: "v=spf1 ~all", want: "softfail"},
			{domain: "spf-none.test", want: "none"},
			{domain: "spf-temp.test", record: "v=spf1 ip4:127.0.0.1 -all", failure: simnet.ServFail, want: "temperror"},
		} {
			if tc.record != "" {
				setDNS(t, c, tc.domain, "TXT", tc.record)
			}
			if tc.failure != simnet.NoFailure {
				failDNS(t, c, tc.domain, tc.failure)
			}
			subject := "spf " + tc.want
			from := "bounce@" + tc.domain
			mustAccept(t, subject, sendMX(t, c, mx, from, []string{addr("alice")}, subject, message("<"+from+">", subject, "spf")))
			ar := ours(t, storedIn(t, c, reader, "alice", subject, "INBOX"))
			wantResult(t, ar, "spf="+tc.want)
			if r := result(ar, "spf"); !strings.Contains(r, "smtp.mailfrom="+from) {
				t.Errorf("%s: spf result %q does not name the MAIL FROM address", tc.domain, r)
			}
			if tc.want == "temperror" && !strings.Contains(result(ar, "spf"), "reason=") {
				t.Errorf("temperror without a reason: %q", ar)
			}
			m.grew(t, "spf/"+tc.want)
		}
	})

	t.Run("null sender", func(t *testing.T) {
		// A bounce: SPF checks the HELO name (go-smtp's client says
		// "localhost", which publishes no SPF record).
		const subject = "null sender bounce"
		mustAccept(t, subject, sendMX(t, c, mx, "", []string{addr("alice")}, subject,
			message("Mail Delivery System <mailer-daemon@relay.test>", subject, "undeliverable")))
		ar := ours(t, storedIn(t, c, reader, "alice", subject, "INBOX"))
		wantResult(t, ar, "spf=none smtp.helo=localhost")
	})

	t.Run("dmarc", func(t *testing.T) {
		setDNS(t, c, "_dmarc.reject.test", "TXT", "v=DMARC1; p=reject")
		setDNS(t, c, "_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine")
		m, mj := newMeter(t, c, mx), newMeter(t, c, junker)

		// p=reject, SPF passing for the unaligned relay.test only: refused
		// at the end of DATA, and nothing stored anywhere.
		before := blobIDs(t, c)
		const rejected = "dmarc rejected"
		o := sendMX(t, c, mx, "bounce@relay.test", []string{addr("alice")}, rejected, message("CEO <ceo@reject.test>", rejected, "pay now"))
		if o.stage != atEnd || reply(o.err) != "550 5.7.1" {
			t.Fatalf("p=reject, unaligned: %s, want 550 5.7.1 at end of DATA", o)
		}
		if !strings.Contains(o.err.Error(), "reject.test") {
			t.Errorf("the refusal does not name the domain: %v", o.err)
		}
		if where, _ := find(t, c, reader, "alice", rejected); where != "" {
			t.Fatalf("a message refused with 550 is stored in %s", where)
		}
		for id := range blobIDs(t, c) {
			if !before[id] {
				t.Errorf("a new body %v is on disk after the refusal", id)
			}
		}
		m.grew(t, "dmarc/fail", "dmarc/rejected", "spf/pass")

		// The same policy with an aligned DKIM signature: delivered.
		sig.publish(c, "reject.test")
		const aligned = "dmarc aligned dkim"
		msg := sig.sign(message("CEO <ceo@reject.test>", aligned, "signed by its domain"), "reject.test")
		mustAccept(t, aligned, sendMX(t, c, mx, "bounce@relay.test", []string{addr("alice")}, aligned, msg))
		ar := ours(t, storedIn(t, c, reader, "alice", aligned, "INBOX"))
		wantResult(t, ar, "dmarc=pass header.from=reject.test")
		wantResult(t, ar, "spf=pass smtp.mailfrom=bounce@relay.test")
		m.grew(t, "dmarc/pass", "dkim/pass")

		// p=quarantine: accepted, into Junk, for every recipient.
		const quarantined = "dmarc quarantined"
		mustAccept(t, quarantined, sendMX(t, c, mx, "bounce@relay.test", []string{addr("alice"), addr("bob")}, quarantined,
			message("<news@quarantine.test>", quarantined, "offer")))
		ar = ours(t, storedIn(t, c, reader, "alice", quarantined, "Junk"))
		wantResult(t, ar, "dmarc=fail header.from=quarantine.test")
		storedIn(t, c, junker, "bob", quarantined, "Junk")
		m.grew(t, "dmarc/fail", "dmarc/junk")

		// dmarc_reject "junk": the p=reject failure is accepted into Junk.
		const junked = "dmarc reject junked"
		mustAccept(t, junked, sendMX(t, c, junker, "bounce@relay.test", []string{addr("alice")}, junked,
			message("CEO <ceo@reject.test>", junked, "pay now")))
		ar = ours(t, storedIn(t, c, reader, "alice", junked, "Junk"))
		wantResult(t, ar, "dmarc=fail header.from=reject.test")
		mj.grew(t, "dmarc/fail", "dmarc/junk")
		if got := verdicts(t, c, junker)["dmarc/rejected"]; got != 0 {
			t.Errorf("node%d, with dmarc_reject junk, counted %v DMARC refusals", junker+1, got)
		}
	})

	t.Run("dns trouble never refuses for good", func(t *testing.T) {
		// A failed lookup is no verdict against the sender, even under
		// p=reject: a failed DMARC record lookup is no policy (accepted);
		// an aligned SPF or DKIM check that could not be made is deferred
		// with 451 (or, with dmarc_reject junk, filed in Junk), and the
		// retry once DNS answers is judged afresh.
		m := newMeter(t, c, mx)
		setDNS(t, c, "_dmarc.dmarc-temp.test", "TXT", "v=DMARC1; p=reject")
		failDNS(t, c, "_dmarc.dmarc-temp.test", simnet.ServFail)
		const noRecord = "dns trouble dmarc record"
		mustAccept(t, noRecord, sendMX(t, c, mx, "bounce@relay.test", []string{addr("alice")}, noRecord,
			message("<ceo@dmarc-temp.test>", noRecord, "x")))
		wantResult(t, ours(t, storedIn(t, c, reader, "alice", noRecord, "INBOX")), "dmarc=temperror header.from=dmarc-temp.test")

		const spfDom, dkimDom = "spf-temp-reject.test", "dkim-temp-reject.test"
		setDNS(t, c, "_dmarc."+spfDom, "TXT", "v=DMARC1; p=reject")
		setDNS(t, c, spfDom, "TXT", "v=spf1 ip4:127.0.0.1 -all")
		failDNS(t, c, spfDom, simnet.ServFail)
		setDNS(t, c, "_dmarc."+dkimDom, "TXT", "v=DMARC1; p=reject")
		sig.publish(c, dkimDom)
		failDNS(t, c, "sel._domainkey."+dkimDom, simnet.ServFail)
		spfMsg := message("<ceo@"+spfDom+">", "dns trouble aligned spf", "x")
		dkimMsg := sig.sign(message("<ceo@"+dkimDom+">", "dns trouble aligned dkim", "x"), dkimDom)
		for _, tc := range []struct{ subject, mailFrom, msg string }{
			{"dns trouble aligned spf", "bounce@" + spfDom, spfMsg},
			{"dns trouble aligned dkim", "bounce@relay.test", dkimMsg},
		} {
			o := sendMX(t, c, mx, tc.mailFrom, []string{addr("alice")}, tc.subject, tc.msg)
			if o.stage != atEnd || reply(o.err) != "451 4.7.1" {
				t.Errorf("%s under p=reject: %s, want 451 4.7.1 at end of DATA", tc.subject, o)
			}
			if where, _ := find(t, c, reader, "alice", tc.subject); where != "" {
				t.Errorf("%s: deferred, yet stored in %s", tc.subject, where)
			}
		}
		m.grew(t, "spf/temperror", "dkim/temperror", "dmarc/temperror", "dmarc/deferred")

		// With dmarc_reject "junk", the same goes to Junk.
		mustAccept(t, "aligned dkim via junker", sendMX(t, c, junker, "bounce@relay.test", []string{addr("alice")}, "dns trouble aligned dkim", dkimMsg))
		wantResult(t, ours(t, storedIn(t, c, reader, "alice", "dns trouble aligned dkim", "Junk")), "dkim=temperror header.d="+dkimDom)

		// DNS answers again: the sender's retry passes.
		failDNS(t, c, spfDom, simnet.NoFailure)
		mustAccept(t, "retry", sendMX(t, c, mx, "bounce@"+spfDom, []string{addr("alice")}, "dns trouble aligned spf", spfMsg))
		ar := ours(t, storedIn(t, c, reader, "alice", "dns trouble aligned spf", "INBOX"))
		wantResult(t, ar, "spf=pass")
		wantResult(t, ar, "dmarc=pass header.from="+spfDom)
	})

	t.Run("own domain from outside", func(t *testing.T) {
		// example.test publishes no DMARC record; the SPF pass is for
		// relay.test. A From: in our own domain from outside is not trusted.
		const subject = "own domain spoofed"
		m := newMeter(t, c, mx)
		mustAccept(t, subject, sendMX(t, c, mx, "bounce@relay.test", []string{addr("alice")}, subject,
			message("Bob <bob@example.test>", subject, "please reset your password")))
		ar := ours(t, storedIn(t, c, reader, "alice", subject, "Junk"))
		wantResult(t, ar, "dmarc=none header.from=example.test")
		m.grew(t, "dmarc/none", "dmarc/junk")
	})

	t.Run("forged authentication results", func(t *testing.T) {
		const subject = "forged results"
		const foreign = "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example"
		msg := message("<bounce@spf-none.test>", subject, "trust me",
			"Authentication-Results: "+authServID+"; spf=pass smtp.mailfrom=bounce@spf-none.test",
			"Authentication-Results: (trust me) MX.Example.TEST;\r\n\tdkim=pass header.d=spf-none.test",
			foreign)
		mustAccept(t, subject, sendMX(t, c, mx, "bounce@spf-none.test", []string{addr("alice")}, subject, msg))
		stored := storedIn(t, c, reader, "alice", subject, "INBOX")
		ar := ours(t, stored) // exactly one: ours
		wantResult(t, ar, "spf=none")
		wantResult(t, ar, "dkim=none")
		if strings.Contains(stored, "trust me)") {
			t.Errorf("a forged field is still stored:\n%s", headerOf(stored))
		}
		if !strings.Contains(stored, "\r\n"+foreign+"\r\n") {
			t.Errorf("the field of another authserv-id is gone:\n%s", headerOf(stored))
		}
		// Ours is above the trace fields, the foreign one stays below.
		if strings.Index(stored, "Authentication-Results: "+authServID) > strings.Index(stored, "\r\nReceived:") ||
			strings.Index(stored, foreign) < strings.Index(stored, "\r\nReceived:") {
			t.Errorf("fields out of place:\n%s", headerOf(stored))
		}
	})

	t.Run("submission", func(t *testing.T) {
		// A message submitted by a logged-in user is not judged: no
		// Authentication-Results, no verdict counted on its node (reader
		// receives no mail from outside in this test).
		before := verdicts(t, c, reader)
		const subject = "submitted"
		// From: names our own domain, which from outside would go to Junk.
		mustAccept(t, subject, sendSubmission(t, c, reader, "alice", []string{addr("bob")}, subject, message("<alice@example.test>", subject, "hi bob")))
		stored := storedIn(t, c, mx, "bob", subject, "INBOX")
		if strings.Contains(stored, "Authentication-Results:") {
			t.Errorf("a submitted message got Authentication-Results:\n%s", headerOf(stored))
		}
		after := verdicts(t, c, reader)
		for _, k := range []string{"spf", "dkim", "dmarc", "iprev"} {
			for key, v := range after {
				if strings.HasPrefix(key, k+"/") && v != before[key] {
					t.Errorf("verdict %s counted for a submission: %v → %v", key, before[key], v)
				}
			}
		}
	})
}

// The greylist delay and the blocklist used in the envelope tests.
const (
	greylistDelay = 3 * time.Second
	blocklist     = "bl.test"
	// listedName is where bl.test lists 127.0.0.1.
	listedName = "1.0.0.127." + blocklist
)

// Greylisting and DNS blocklists, judged at MAIL FROM and RCPT TO, with
// the greylist state shared by every node through the replicated store.
func TestEnvelopeChecks(t *testing.T) {
	t.Parallel()
	c := newCluster(t, func(i int, cfg *node.Config) {
		cfg.Inbound.Greylisting = true
		cfg.Inbound.GreylistDelay = greylistDelay
		cfg.Inbound.DNSBLZones = []string{blocklist}
	}, "alice")
	// The harness's wildcard answers every name with A 127.0.0.1, which
	// a blocklist would read as a listing: a real list answers NXDOMAIN
	// for an address it does not list.
	failDNS(t, c, listedName, simnet.NXDomain)

	// passed is the sender whose triplet got through greylisting.
	var passed string
	t.Run("greylisting", func(t *testing.T) {
		// A first attempt through node1, at once again through node3:
		// both refused. (If on this machine the second came only after
		// the delay, or met an election, it proves nothing: again with a
		// new triplet.) start is taken before the first attempt, refused
		// after its reply: the triplet was first seen between the two.
		var start, refused time.Time
		var from, subject string
		for try := 1; ; try++ {
			if try > 5 {
				t.Fatalf("five times in a row the retry through another node did not come within the %s delay", greylistDelay)
			}
			from = fmt.Sprintf("patient%d@remote.test", try)
			subject = fmt.Sprintf("greylisted %d", try)
			msg := message("<"+from+">", subject, "x")
			start = time.Now()
			o := sendMX(t, c, 0, from, []string{addr("alice")}, subject, msg)
			refused = time.Now()
			if storeTrouble(o) {
				t.Logf("try %d: first attempt met an election: %s", try, o)
				continue
			}
			if !greylisted(o) {
				t.Fatalf("first attempt: %s, want 451 4.7.1 (greylisted) at RCPT", o)
			}
			o = sendMX(t, c, 2, from, []string{addr("alice")}, subject, msg)
			soon := time.Since(start) < greylistDelay
			switch {
			case soon && greylisted(o):
			case soon && !storeTrouble(o):
				t.Fatalf("retry within the delay through another node: %s, want 451 4.7.1 (greylisted) at RCPT", o)
			default:
				t.Logf("try %d: the early retry came after %s: %s; again with a new sender", try, time.Since(start), o)
				continue
			}
			break
		}

		// After the delay, through the node that has not seen the triplet
		// yet: it knows it from the replicated state and accepts at once.
		for time.Since(refused) < greylistDelay {
			time.Sleep(50 * time.Millisecond)
		}
		deadline := time.Now().Add(cluster.RetryWindow)
		for {
			o := sendMX(t, c, 1, from, []string{addr("alice")}, subject, message("<"+from+">", subject, "x"))
			if o.err == nil {
				break
			}
			if !storeTrouble(o) || time.Now().After(deadline) {
				t.Fatalf("retry %s after the first refusal, through a node that had not seen it: %s, want it accepted",
					time.Since(refused).Round(time.Millisecond), o)
			}
			time.Sleep(100 * time.Millisecond)
		}
		storedIn(t, c, 2, "alice", subject, "INBOX")

		// From then on the triplet passes at once, through any node.
		const again = "greylist known"
		mustAccept(t, again, sendMX(t, c, 0, from, []string{addr("alice")}, again, message("<"+from+">", again, "x")))
		storedIn(t, c, 1, "alice", again, "INBOX")
		passed = from

		// The refusals are counted.
		if got := verdicts(t, c, 0)["greylist/refused"]; got < 1 {
			t.Errorf("node1 counted %v greylist refusals, want ≥ 1", got)
		}
		if got := verdicts(t, c, 2)["greylist/refused"]; got < 1 {
			t.Errorf("node3 counted %v greylist refusals, want ≥ 1", got)
		}
	})

	t.Run("dnsbl", func(t *testing.T) {
		failDNS(t, c, listedName, simnet.NoFailure)
		setDNS(t, c, listedName, "A", "127.0.0.2")
		setDNS(t, c, listedName, "TXT", "listed for testing, see https://bl.test/127.0.0.1")
		m := newMeter(t, c, 1)
		const listed = "listed"
		o := sendMX(t, c, 1, "someone@remote.test", []string{addr("alice")}, listed, message("<someone@remote.test>", listed, "x"))
		if o.stage != atMail || reply(o.err) != "550 5.7.1" {
			t.Fatalf("a listed client: %s, want 550 5.7.1 at MAIL FROM", o)
		}
		if msg := o.err.Error(); !strings.Contains(msg, blocklist) || !strings.Contains(msg, "listed for testing") {
			t.Errorf("the refusal %q names neither the list nor its reason", msg)
		}
		m.grew(t, "dnsbl/listed")

		// Not listed (NXDOMAIN again): past MAIL FROM. A new triplet is
		// greylisted at RCPT; the one that got through before is accepted.
		c.DNS().Remove(listedName)
		failDNS(t, c, listedName, simnet.NXDomain)
		const subject = "not listed"
		o = sendMX(t, c, 1, "someone@remote.test", []string{addr("alice")}, subject, message("<someone@remote.test>", subject, "x"))
		if !greylisted(o) && !storeTrouble(o) {
			t.Fatalf("a client no longer listed, new triplet: %s, want 451 4.7.1 at RCPT", o)
		}
		if passed == "" {
			t.Fatal("the greylisting test let no triplet through to try")
		}
		mustAccept(t, subject, sendMX(t, c, 1, passed, []string{addr("alice")}, subject, message("<"+passed+">", subject, "x")))
		storedIn(t, c, 0, "alice", subject, "INBOX")
	})
}

// greylisted reports whether o is greylisting's refusal at RCPT.
func greylisted(o outcome) bool {
	return o.stage == atRcpt && reply(o.err) == "451 4.7.1" && strings.Contains(o.err.Error(), "greylisted")
}

// storeTrouble reports whether o is greylisting's temporary refusal for
// a store it could not read or write (an election): retried.
func storeTrouble(o outcome) bool {
	return o.stage == atRcpt && reply(o.err) == "451 4.7.1" && strings.Contains(o.err.Error(), "cannot be")
}
