package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// metricValue reads one unlabelled sample from a node's /metrics.
func metricValue(t *testing.T, addr, name string) (float64, bool) {
	t.Helper()
	resp, body := opsCall(t, addr, http.MethodGet, "/metrics", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, v)
			}
			return f, true
		}
	}
	return 0, false
}

// The queue commands end to end, through a follower of a real 3-node
// cluster (every read passes the barrier: the entries were committed
// through the leader a moment before). No worker runs in these tests:
// entries change only by what the test and the commands do.
func TestQueueCommandsEndToEnd(t *testing.T) {
	// No worker: the test claims and acts on the entries itself.
	c := cluster.New(t, cluster.Options{Configure: func(_ int, cfg *node.Config) { cfg.OutboundOff = true }})
	ctx := context.Background()
	leader := c.Leader()
	s := c.Node(leader).Store()
	addr := c.Node(c.Follower()).HTTPAddr()
	admin := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, errOut := cli(append(args, "--addr", addr, "--token", testToken)...)
		if code != wantCode {
			t.Fatalf("mailcluster %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	list := func() api.QueueListing {
		t.Helper()
		var l api.QueueListing
		if err := json.Unmarshal([]byte(admin(0, "queue", "list", "--json")), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	show := func(id state.QueueID) api.QueueEntryDetail {
		t.Helper()
		var e api.QueueEntryDetail
		if err := json.Unmarshal([]byte(admin(0, "queue", "show", id.String(), "--json")), &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	gauge := func(name string, want func(float64) bool, what string) {
		t.Helper()
		c.WaitFor(name+" "+what, func() bool {
			v, ok := metricValue(t, addr, name)
			return ok && want(v)
		})
	}
	if out := admin(0, "queue", "list"); !strings.Contains(out, "the queue is empty") {
		t.Fatalf("empty queue: %s", out)
	}
	gauge("mailcluster_queue_entries", func(v float64) bool { return v == 0 }, "is 0")
	gauge("mailcluster_queue_oldest_age_seconds", func(v float64) bool { return v == 0 }, "is 0")

	// The queue clock, as the leader's queue task would set it.
	t0 := time.Now().UTC()
	if err := s.QueueTick(ctx, t0); err != nil {
		t.Fatal(err)
	}
	enqueue := func(targets ...state.QueueTarget) []state.QueueID {
		t.Helper()
		var b replication.Ingested
		cluster.Retry(t, "ingest", func() (err error) {
			b, err = s.Ingest(ctx, bytes.NewReader([]byte("From: alice@example.test\r\nTo: someone@remote.test\r\nSubject: out\r\n\r\nhello\r\n")), 0)
			return err
		})
		d, err := s.CommitDeliveryQueued(ctx, b, nil, targets, time.Now())
		if err != nil || len(d.Queued) != len(targets) {
			t.Fatalf("enqueue: %+v, %v", d, err)
		}
		// The leader's clock task (off here) ticks once entries exist:
		// only entries the clock was read after are claimable.
		if err := s.QueueTick(ctx, t0); err != nil {
			t.Fatal(err)
		}
		return d.Queued
	}
	expires, delayAt := t0.Add(5*24*time.Hour), t0.Add(4*time.Hour)
	ids := enqueue(
		state.QueueTarget{From: "alice@example.test", To: "carol@remote.test", ORCPT: "rfc822;carol@remote.test",
			Notify: state.NotifySuccess | state.NotifyFailure, Ret: "HDRS", EnvID: "env-42", Account: "alice@example.test",
			UTF8: true, Expires: expires.UnixNano(), DelayDSNAt: delayAt.UnixNano()},
		state.QueueTarget{From: "alice@example.test", To: "dave@remote.test", Account: "alice@example.test", Expires: expires.UnixNano()},
		state.QueueTarget{From: "", To: "erin@other.test", Expires: expires.UnixNano()}, // a DSN: null sender
	)
	ids = append(ids, enqueue(state.QueueTarget{From: "bob@example.test", To: "frank@remote.test", Expires: expires.UnixNano()})...)
	carol, dave, erin, frank := ids[0], ids[1], ids[2], ids[3]

	// dave: an attempt in progress on the leader (its lease runs an hour
	// of queue clock); frank: tried once, greylisted, due in 10 minutes.
	holder := c.Members[leader].ID
	claim, err := s.QueueClaim(ctx, holder, []state.QueueID{dave, frank}, time.Hour)
	if err != nil || len(claim.Granted) != 2 {
		t.Fatalf("claim: %+v, %v", claim, err)
	}
	rep, err := s.QueueReport(ctx, claim.Token, []state.QueueOutcome{{ID: frank, Kind: state.OutcomeDeferred,
		Reply: "451 4.7.1 greylisted, try again later", Host: "mx.remote.test", NextAttempt: t0.Add(10 * time.Minute).UnixNano()}})
	if err != nil || rep.Outcomes[0].Err() != nil {
		t.Fatalf("report: %+v, %v", rep, err)
	}

	// queue list: every entry, oldest first, with what an operator needs.
	l := list()
	if !l.Now.Equal(t0) || len(l.Entries) != 4 {
		t.Fatalf("list: %+v", l)
	}
	for i, id := range ids {
		if l.Entries[i].ID != id.String() {
			t.Fatalf("list order: %+v, want %v", l.Entries, ids)
		}
	}
	d, f := l.Entries[1], l.Entries[3]
	if !d.Leased || d.HeldBy != holder || !d.LeaseUntil.Equal(t0.Add(time.Hour)) || d.LeaseToken != claim.Token || d.Attempts != 1 {
		t.Fatalf("the leased entry: %+v", d)
	}
	if f.Leased || f.Attempts != 1 || f.LastReply != "451 4.7.1 greylisted, try again later" || f.LastHost != "mx.remote.test" ||
		!f.NextAttempt.Equal(t0.Add(10*time.Minute)) || f.From != "bob@example.test" {
		t.Fatalf("the deferred entry: %+v", f)
	}
	if l.Entries[2].From != "" || l.Entries[2].To != "erin@other.test" {
		t.Fatalf("the DSN entry: %+v", l.Entries[2])
	}
	table := admin(0, "queue", "list")
	for _, want := range []string{"ID", "AGE", "ATTEMPTS", "NEXT ATTEMPT", "TO", "FROM", "LAST REPLY", "HELD BY",
		"in progress", holder + " until " + t0.Add(time.Hour).Format("15:04:05Z"), "in 10m0s", "<>",
		"451 4.7.1 greylisted", "carol@remote.test", "4 entries"} {
		if !strings.Contains(table, want) {
			t.Errorf("queue list lacks %q:\n%s", want, table)
		}
	}

	// queue show: everything, the DSN parameters included.
	e := show(carol)
	if e.To != "carol@remote.test" || e.From != "alice@example.test" || e.Account != "alice@example.test" ||
		e.ORCPT != "rfc822;carol@remote.test" || !slices.Equal(e.Notify, []string{"success", "failure"}) || e.Ret != "HDRS" ||
		e.EnvID != "env-42" || !e.UTF8 || !e.Expires.Equal(expires) || !e.DelayDSNAt.Equal(delayAt) || e.Size == 0 ||
		len(e.Blob) != 64 || e.Created.IsZero() || !e.Now.Equal(t0) || e.Attempts != 0 {
		t.Fatalf("show: %+v", e)
	}
	text := admin(0, "queue", "show", carol.String())
	for _, want := range []string{"to            carol@remote.test", "dsn notify    success,failure", "dsn ret       HDRS",
		"dsn envid     env-42", "dsn orcpt     rfc822;carol@remote.test", "smtputf8      yes", "next attempt  now",
		"expires       " + expires.Format("2006-01-02 15:04:05Z"), "delay DSN     after " + delayAt.Format("2006-01-02 15:04:05Z")} {
		if !strings.Contains(text, want) {
			t.Errorf("queue show lacks %q:\n%s", want, text)
		}
	}
	gauge("mailcluster_queue_entries", func(v float64) bool { return v == 4 }, "is 4")
	gauge("mailcluster_queue_oldest_age_seconds", func(v float64) bool { return v > 0 && v < 3600 }, "is the first entry's age")

	// retry: frank is due now; dave's attempt in progress keeps its lease.
	if out := admin(0, "queue", "retry", frank.String(), dave.String()); !strings.Contains(out, "due now: "+frank.String()+" "+dave.String()) {
		t.Fatalf("retry: %s", out)
	}
	if e := show(frank); !e.NextAttempt.Equal(t0) || e.Leased || e.LastReply == "" {
		t.Fatalf("frank after retry: %+v", e)
	}
	if e := show(dave); !e.Leased || e.HeldBy != holder {
		t.Fatalf("dave after retry: the running attempt lost its lease: %+v", e)
	}
	if out := admin(0, "queue", "retry", "--all"); !strings.Contains(out, "due now: "+strings.Join([]string{carol.String(), dave.String(), erin.String(), frank.String()}, " ")) {
		t.Fatalf("retry --all: %s", out)
	}

	// bounce: marked, due now; the worker fails it with a DSN.
	if out := admin(0, "queue", "bounce", erin.String()); !strings.Contains(out, "bouncing: "+erin.String()) {
		t.Fatalf("bounce: %s", out)
	}
	if e := show(erin); !e.BounceRequested || !e.NextAttempt.Equal(t0) {
		t.Fatalf("erin after bounce: %+v", e)
	}
	if out := admin(0, "queue", "list"); !strings.Contains(out, "now (bounce)") {
		t.Fatalf("list after bounce: %s", out)
	}

	// Refusals: nothing changes.
	for _, tc := range []struct {
		method, path, body string
		status             int
		says               string
	}{
		{http.MethodGet, "/api/queue/999999.0", "", http.StatusNotFound, "no such queue entry: 999999.0"},
		{http.MethodGet, "/api/queue/abc", "", http.StatusBadRequest, "bad queue ID"},
		{http.MethodGet, "/api/queue/0.0", "", http.StatusBadRequest, "bad queue ID"},
		{http.MethodGet, "/api/queue/1.70000", "", http.StatusBadRequest, "bad queue ID"},
		{http.MethodPost, "/api/queue/delete", `{"ids":["` + frank.String() + `","999999.0"]}`, http.StatusNotFound, "no such queue entry: 999999.0 (nothing was changed)"},
		{http.MethodPost, "/api/queue/bounce", `{"ids":["x.y"]}`, http.StatusBadRequest, "bad queue ID"},
		{http.MethodPost, "/api/queue/delete", `{"all":true}`, http.StatusBadRequest, "retry only"},
		{http.MethodPost, "/api/queue/retry", `{"all":true,"ids":["` + frank.String() + `"]}`, http.StatusBadRequest, "not both"},
		{http.MethodPost, "/api/queue/retry", `{}`, http.StatusBadRequest, "no queue IDs"},
		{http.MethodPost, "/api/queue/retry", `["` + frank.String() + `"]`, http.StatusBadRequest, "bad request body"},
		{http.MethodPost, "/api/queue/requeue", `{"ids":["` + frank.String() + `"]}`, http.StatusMethodNotAllowed, ""},
		{http.MethodGet, "/api/queue", "", http.StatusUnauthorized, "wrong admin token"},
	} {
		token := testToken
		if tc.status == http.StatusUnauthorized {
			token = ""
		}
		resp, body := opsCall(t, addr, tc.method, tc.path, token, tc.body)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
			t.Errorf("%s %s %s: %d %s, want %d %q", tc.method, tc.path, tc.body, resp.StatusCode, body, tc.status, tc.says)
		}
	}
	if out := admin(1, "queue", "show", "999999.0"); !strings.Contains(out, "no such queue entry") {
		t.Fatalf("show of an unknown entry: %s", out)
	}
	if out := admin(1, "queue", "show", "nonsense"); !strings.Contains(out, "bad queue ID") {
		t.Fatalf("show of a malformed ID: %s", out)
	}
	if out := admin(1, "queue", "delete", frank.String(), "999999.0"); !strings.Contains(out, "no such queue entry: 999999.0") {
		t.Fatalf("delete with an unknown ID: %s", out)
	}
	if out := admin(1, "queue", "delete"); !strings.Contains(out, "which entries?") {
		t.Fatalf("delete without IDs: %s", out)
	}
	if out := admin(1, "queue", "bounce", "--all"); !strings.Contains(out, "flag provided but not defined") {
		t.Fatalf("bounce --all: %s", out)
	}
	if l := list(); len(l.Entries) != 4 {
		t.Fatalf("a refused request changed the queue: %+v", l)
	}

	// delete: gone, without a DSN (nothing else enters the queue).
	if out := admin(0, "queue", "delete", carol.String()); !strings.Contains(out, "deleted: "+carol.String()) {
		t.Fatalf("delete: %s", out)
	}
	if out := admin(1, "queue", "show", carol.String()); !strings.Contains(out, "no such queue entry") {
		t.Fatalf("show after delete: %s", out)
	}
	l = list()
	if len(l.Entries) != 3 || l.Entries[0].ID != dave.String() {
		t.Fatalf("list after delete: %+v", l)
	}
	gauge("mailcluster_queue_entries", func(v float64) bool { return v == 3 }, "is 3")
	admin(0, "queue", "delete", dave.String(), erin.String(), frank.String())
	if out := admin(0, "queue", "list"); !strings.Contains(out, "the queue is empty") {
		t.Fatalf("list at the end: %s", out)
	}
	if out := admin(0, "queue", "retry", "--all"); !strings.Contains(out, "nothing to do") {
		t.Fatalf("retry --all of an empty queue: %s", out)
	}
	gauge("mailcluster_queue_entries", func(v float64) bool { return v == 0 }, "is 0 again")
	gauge("mailcluster_queue_oldest_age_seconds", func(v float64) bool { return v == 0 }, "is 0 again")

	// A long queue: retry --all and a delete of every ID go in several
	// commands of bounded size, and each entry is acted on once.
	many := make([]state.QueueTarget, 1001)
	for i := range many {
		many[i] = state.QueueTarget{From: "alice@example.test", To: "r" + strconv.Itoa(i) + "@remote.test", Expires: expires.UnixNano()}
	}
	manyIDs := enqueue(many...)
	var res api.QueueActionResult
	if err := json.Unmarshal([]byte(admin(0, "queue", "retry", "--all", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != len(manyIDs) || len(res.Gone) != 0 || res.Changed[1000] != manyIDs[1000].String() {
		t.Fatalf("retry --all of %d entries: %d changed, %d gone", len(manyIDs), len(res.Changed), len(res.Gone))
	}
	var names []string
	for _, id := range manyIDs {
		names = append(names, id.String())
	}
	names = append(names, manyIDs[0].String()) // a repeat counts once
	out, err := (&api.Client{BaseURL: "http://" + addr, Token: testToken}).QueueAction(ctx, api.QueueDelete, api.QueueActionRequest{IDs: names})
	if err != nil || len(out.Changed) != len(manyIDs) {
		t.Fatalf("delete of %d entries: %d changed, %v", len(manyIDs), len(out.Changed), err)
	}
	if l := list(); len(l.Entries) != 0 {
		t.Fatalf("%d entries left", len(l.Entries))
	}
}
