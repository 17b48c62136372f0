package spamfilter_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/spam"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	trainEach = 200 // spam and ham messages trained
	heldEach  = 50  // spam and ham messages held out
	// controlEach messages are moved without training, to tell the
	// state a MOVE costs from the state a training costs.
	controlEach = 60
	minAcc      = 0.90
)

// A user trains the classifier over IMAP through all three nodes; then
// mail through any node's MX port is sorted by what every node learnt,
// with the same score wherever it arrived.
func TestSpamFilterTrainedOverIMAPAcrossNodes(t *testing.T) {
	begin := time.Now()
	user, control := "alice@"+domain, "bob@"+domain
	c := newCluster(t, user, control)
	corp := newCorpus(13)
	gen := func(isSpam bool, n int) []msg {
		out := make([]msg, n)
		for i := range out {
			out[i] = corp.message(isSpam, user)
		}
		return out
	}
	trainSpam, trainHam := gen(true, trainEach), gen(false, trainEach)
	heldSpam, heldHam := gen(true, heldEach), gen(false, heldEach)
	nodeSpam, nodeHam := gen(true, 3), gen(false, 3)
	same := []msg{corp.message(true, user), corp.message(false, user), corp.mixed(user)}
	controlMsgs := append(gen(true, controlEach/2), gen(false, controlEach/2)...)
	t.Logf("cluster up and corpus made in %s", time.Since(begin).Round(time.Millisecond))

	// The user already has the training mail: spam in INBOX, ham in Junk
	// (the filter was not trained yet, so nothing decided that).
	phase := time.Now()
	storeAll(t, c.Node(0), user, "INBOX", trainSpam)
	storeAll(t, c.Node(0), user, "Junk", trainHam)
	clients := make([]*imapclient.Client, 3)
	for i := range clients {
		clients[i] = dialIMAP(t, c, i, user)
	}
	inbox, junk := uids(t, clients[0], "INBOX"), uids(t, clients[0], "Junk")
	if len(inbox) != trainEach || len(junk) != trainEach {
		t.Fatalf("stored %d in INBOX and %d in Junk, want %d each", len(inbox), len(junk), trainEach)
	}
	for i := range 3 {
		s, h := totals(t, c, i, user)
		if s != 0 || h != 0 {
			t.Fatalf("node %d: %d spam and %d ham trained before any move", i, s, h)
		}
	}
	t.Logf("stored %d training messages in %s", 2*trainEach, time.Since(phase).Round(time.Millisecond))

	// What a MOVE itself adds to the state, without training: the
	// control user moves messages from INBOX to Archive in one command.
	storeAll(t, c.Node(0), control, "INBOX", controlMsgs)
	ctl := dialIMAP(t, c, 0, control)
	ctlUIDs := uids(t, ctl, "INBOX")
	snapCtl, _ := stateSize(t, c.Members[0])
	if _, err := ctl.Move(imap.UIDSetNum(ctlUIDs...), "Archive").Wait(); err != nil {
		t.Fatalf("control move: %v", err)
	}
	snapBefore, fileBefore := stateSize(t, c.Members[0])
	moveCost := (snapBefore - snapCtl) / int64(len(ctlUIDs))

	// Training: each node's IMAP session moves a third of the spam into
	// Junk and a third of the ham out of it, one MOVE of many UIDs each,
	// all three sessions at once.
	phase = time.Now()
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = moveThird(cl, i, inbox, junk)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Training is queued behind each MOVE's reply, one proposal per
	// message; with the race detector on a loaded 2-core machine it takes
	// tens of seconds. The wait ends when the counts stop growing for
	// long (training stalled: a message of a MOVE was not trained), or
	// after a generous deadline; both only delay a failure.
	waitTrained(t, c, user)
	for i := range 3 {
		for _, acct := range []string{user, ""} {
			s, h, err := c.Node(i).Store().SpamCounts().Totals(acct)
			if err != nil || s != trainEach || h != trainEach {
				t.Fatalf("node %d, model %q: %d spam and %d ham trained (%v), want exactly %d each: every message of a multi-UID MOVE once",
					i, acct, s, h, err, trainEach)
			}
		}
	}
	snapAfter, fileAfter := stateSize(t, c.Members[0])
	t.Logf("trained %d messages over IMAP MOVE through 3 nodes in %s", 2*trainEach, time.Since(phase).Round(time.Millisecond))
	perMsg := (snapAfter - snapBefore) / (2 * trainEach)
	inUse, keys := spamBuckets(t, c.Members[0])
	t.Logf("the classifier's buckets on node1 after %d trainings: %d bytes in use, %d keys: %d bytes and %d keys per trained message",
		2*trainEach, inUse, keys, inUse/(2*trainEach), keys/(2*trainEach))
	t.Logf("state per trained message on node1 (its account's and the cluster-wide counts): %d bytes: %d a MOVE with its training, less %d a MOVE alone (%d moved without training; the snapshot grows in 4 KiB pages); snapshot %d → %d bytes; bbolt file %d → %d bytes",
		perMsg-moveCost, perMsg, moveCost, len(ctlUIDs), snapBefore, snapAfter, fileBefore, fileAfter)

	reader := clients[0]
	check := func(t *testing.T, got []stored, m msg) {
		t.Helper()
		for _, s := range got {
			wantBox, wantStatus := "INBOX", "No,"
			if m.spam {
				wantBox, wantStatus = "Junk", "Yes,"
			}
			if s.mailbox != wantBox || !strings.HasPrefix(s.status, wantStatus) || s.junkKW != m.spam || !strings.Contains(s.status, "model=account") {
				t.Errorf("%s: in %s, X-Spam-Status %q, $Junk %v; want %s, %q…model=account, $Junk %v",
					m.id, s.mailbox, s.status, s.junkKW, wantBox, wantStatus, m.spam)
			}
		}
	}

	if !t.Run("an unseen spam and ham through each node's MX", func(t *testing.T) {
		from := uidNext(t, reader)
		for i := range 3 {
			if err := sendMX(c, i, user, []msg{nodeSpam[i], nodeHam[i]}); err != nil {
				t.Fatal(err)
			}
		}
		got := collect(t, reader, from, append(append([]msg(nil), nodeSpam...), nodeHam...))
		for i := range 3 {
			check(t, got[nodeSpam[i].id], nodeSpam[i])
			check(t, got[nodeHam[i].id], nodeHam[i])
			t.Logf("node %d: spam %q; ham %q", i, got[nodeSpam[i].id][0].status, got[nodeHam[i].id][0].status)
		}
	}) {
		t.FailNow()
	}

	t.Run("held-out accuracy", func(t *testing.T) {
		phase := time.Now()
		held := make([]msg, 0, 2*heldEach)
		for k := range heldEach {
			held = append(held, heldSpam[k], heldHam[k])
		}
		from := uidNext(t, reader)
		sendSpread(t, c, user, held)
		got := collect(t, reader, from, held)
		right, fp, fn, sideRight := 0, 0, 0, 0
		for _, m := range held {
			s := got[m.id][0]
			if score, err := strconv.ParseFloat(s.score, 64); err == nil && (score > 0.5) == m.spam {
				sideRight++
			}
			switch inJunk := s.mailbox == "Junk"; {
			case inJunk == m.spam:
				right++
			case inJunk:
				fp++
			default:
				fn++
			}
		}
		acc := float64(right) / float64(len(held))
		t.Logf("held out %d spam + %d ham through the MX ports of 3 nodes in %s: %.1f%% sorted right at the threshold (%d ham in Junk, %d spam in INBOX); %.1f%% on the right side of 0.5",
			heldEach, heldEach, time.Since(phase).Round(time.Millisecond), 100*acc, fp, fn, 100*float64(sideRight)/float64(len(held)))
		if acc < minAcc {
			t.Errorf("accuracy %.1f%%, want at least %.0f%%", 100*acc, 100*minAcc)
		}
	})

	t.Run("every node gives the same verdict", func(t *testing.T) {
		from := uidNext(t, reader)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = sendMX(c, i, user, same)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got := collectCopies(t, reader, from, same, 3)
		for _, m := range same {
			copies := got[m.id]
			for _, s := range copies[1:] {
				if s.score != copies[0].score || s.status != copies[0].status || s.mailbox != copies[0].mailbox {
					t.Errorf("%s: stored %q / %q in %s and %q / %q in %s", m.id, copies[0].score, copies[0].status, copies[0].mailbox,
						s.score, s.status, s.mailbox)
				}
			}
			// The exact score, not only its three decimals: every node's
			// counts give the same float.
			toks, err := spam.Tokens(strings.NewReader(m.body))
			if err != nil {
				t.Fatal(err)
			}
			var scores []float64
			for i := range 3 {
				p, ex, err := spam.Score(c.Node(i).Store().SpamCounts(), user, toks)
				if err != nil || ex.Model != spam.ModelAccount {
					t.Fatalf("node %d: score %s: %+v %v", i, m.id, ex, err)
				}
				scores = append(scores, p)
			}
			if scores[0] != scores[1] || scores[0] != scores[2] {
				t.Errorf("%s: nodes score %v", m.id, scores)
			}
			if want := fmt.Sprintf("%.3f", scores[0]); copies[0].score != want {
				t.Errorf("%s: X-Spam-Score %q, the counts say %s", m.id, copies[0].score, want)
			}
			t.Logf("%s: X-Spam-Score %s on all %d copies (nodes compute %v)", m.id, copies[0].score, len(copies), scores[0])
		}
	})

	// Filtering never trains: only the user's moves do.
	for i := range 3 {
		if s, h := totals(t, c, i, user); s != trainEach || h != trainEach {
			t.Errorf("node %d: %d spam and %d ham trained after the MX deliveries, want %d each", i, s, h, trainEach)
		}
	}

	t.Run("moving a trained message back and forth moves its training over", func(t *testing.T) {
		m := trainSpam[len(trainSpam)-1]
		var uid imap.UID
		for _, s := range readBack(t, clients[1], map[string]imap.UID{"Junk": 1, "INBOX": imap.UID(^uint32(0))}) {
			if s.id == m.id {
				uid = s.uid
			}
		}
		if uid == 0 {
			t.Fatalf("%s is not in Junk", m.id)
		}
		// Node 2's session says it is ham after all: one spam fewer, one
		// ham more, on every node (not one more of each).
		if _, err := clients[1].Select("Junk", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		mv, err := clients[1].Move(imap.UIDSetNum(uid), "INBOX").Wait()
		if err != nil {
			t.Fatal(err)
		}
		waitTotals(t, c, user, trainEach-1, trainEach+1)
		// Node 3's session says spam again: back to where it was.
		if _, err := clients[2].Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := clients[2].Move(mv.DestUIDs, "Junk").Wait(); err != nil {
			t.Fatal(err)
		}
		waitTotals(t, c, user, trainEach, trainEach)
	})
	logTrainingLatency(t, c, control, corp)
	t.Logf("whole test: %s", time.Since(begin).Round(time.Millisecond))
}

// moveThird is node i's share of the training: every third UID of the
// spam (in INBOX) moved to Junk, and of the ham (in Junk) to INBOX, one
// MOVE command each.
func moveThird(cl *imapclient.Client, i int, inbox, junk []imap.UID) error {
	share := func(all []imap.UID) imap.UIDSet {
		var set imap.UIDSet
		for k := i; k < len(all); k += 3 {
			set.AddNum(all[k])
		}
		return set
	}
	for _, mv := range []struct {
		from, to string
		set      imap.UIDSet
	}{{"INBOX", "Junk", share(inbox)}, {"Junk", "INBOX", share(junk)}} {
		if _, err := cl.Select(mv.from, nil).Wait(); err != nil {
			return fmt.Errorf("node %d: select %s: %w", i, mv.from, err)
		}
		if err := moveOnce(cl, mv.set, mv.to); err != nil {
			return fmt.Errorf("node %d: UID MOVE %s %s: %w", i, mv.set, mv.to, err)
		}
	}
	return nil
}

// moveOnce runs UID MOVE, again after a refusal (an election on a loaded
// machine) as long as every message is still in the selected mailbox: a
// move is one commit, all or nothing. A refused MOVE that took effect
// anyway cannot be retried (the trainer learns only from a MOVE that
// succeeded), so it fails the test with what happened.
func moveOnce(cl *imapclient.Client, set imap.UIDSet, to string) error {
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		_, err := cl.Move(set, to).Wait()
		if err == nil {
			return nil
		}
		left, serr := cl.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
		if serr != nil {
			return fmt.Errorf("%w (then UID SEARCH: %v)", err, serr)
		}
		want, _ := set.Nums()
		if n := len(left.AllUIDs()); n != len(want) || time.Now().After(deadline) {
			return fmt.Errorf("%w (%d of the %d messages are still there)", err, n, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// totals reads node i's replicated counts for user's own model.
func totals(t *testing.T, c *cluster.Cluster, i int, user string) (spamMsgs, hamMsgs uint64) {
	t.Helper()
	s, h, err := c.Node(i).Store().SpamCounts().Totals(user)
	if err != nil {
		t.Fatalf("node %d: totals: %v", i, err)
	}
	return s, h
}

// collect waits until every message has arrived (at least once) and
// returns what was stored, by X-Corpus-ID.
func collect(t *testing.T, cl *imapclient.Client, from map[string]imap.UID, msgs []msg) map[string][]stored {
	t.Helper()
	return collectCopies(t, cl, from, msgs, 1)
}

func collectCopies(t *testing.T, cl *imapclient.Client, from map[string]imap.UID, msgs []msg, copies int) map[string][]stored {
	t.Helper()
	var got map[string][]stored
	cluster.WaitFor(t, fmt.Sprintf("%d messages, %d copies each, in INBOX or Junk", len(msgs), copies), cluster.Timeout, func() bool {
		got = map[string][]stored{}
		for _, s := range readBack(t, cl, from) {
			got[s.id] = append(got[s.id], s)
		}
		for _, m := range msgs {
			if len(got[m.id]) < copies {
				return false
			}
		}
		return true
	})
	return got
}

// waitTrained waits until every node counts trainEach spam and ham
// trainings for user, failing with the counts it saw if they stop
// growing for a long while or take far too long.
func waitTrained(t *testing.T, c *cluster.Cluster, user string) {
	t.Helper()
	const stall, limit = 45 * time.Second, 3 * cluster.RetryWindow
	begin, lastChange := time.Now(), time.Now()
	var last string
	for {
		done := true
		var seen []string
		for i := range 3 {
			s, h := totals(t, c, i, user)
			seen = append(seen, fmt.Sprintf("node %d: %d spam, %d ham", i, s, h))
			done = done && s >= trainEach && h >= trainEach
		}
		if done {
			return
		}
		if now := strings.Join(seen, "; "); now != last {
			last, lastChange = now, time.Now()
		}
		if time.Since(lastChange) > stall || time.Since(begin) > limit {
			t.Fatalf("training stopped short of %d spam and %d ham on every node after %s: %s", trainEach, trainEach,
				time.Since(begin).Round(time.Second), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTotals waits until every node counts exactly these trainings for
// user and for the cluster-wide model (user is the only one who trains).
func waitTotals(t *testing.T, c *cluster.Cluster, user string, wantSpam, wantHam uint64) {
	t.Helper()
	var last string
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		ok := true
		var seen []string
		for i := range 3 {
			for _, acct := range []string{user, ""} {
				s, h, err := c.Node(i).Store().SpamCounts().Totals(acct)
				if err != nil {
					t.Fatal(err)
				}
				seen = append(seen, fmt.Sprintf("node %d model %q: %d/%d", i, acct, s, h))
				ok = ok && s == wantSpam && h == wantHam
			}
		}
		if ok {
			return
		}
		last = strings.Join(seen, "; ")
		if time.Now().After(deadline) {
			t.Fatalf("want %d spam and %d ham trained everywhere; %s", wantSpam, wantHam, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logTrainingLatency logs what one training proposal costs next to an
// empty one, both one at a time as the trainer proposes them: the figure
// behind this test's run time (the trainer proposes one message after
// another, and each TrainSpam updates every token's key in two models).
// It asserts nothing; it trains control's model after every check.
func logTrainingLatency(t *testing.T, c *cluster.Cluster, control string, corp *corpus) {
	const n = 20
	s := c.Node(0).Store()
	var train, empty time.Duration
	for k := range n {
		toks, err := spam.Tokens(strings.NewReader(corp.message(k%2 == 0, control).body))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		err = s.TrainSpam(ctxT(t), control, state.BlobID{}, k%2 == 0, toks)
		train += time.Since(t0)
		if err != nil {
			t.Logf("latency probe: %v", err)
			return
		}
		t0 = time.Now()
		cluster.Settle(t, c.Node(0))
		empty += time.Since(t0)
	}
	t.Logf("one TrainSpam proposal takes %s, an empty one %s (mean of %d, one at a time through node1)",
		(train / n).Round(time.Microsecond), (empty / n).Round(time.Microsecond), n)
}
