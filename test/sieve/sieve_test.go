package sieve_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const listsScript = `require ["fileinto","imap4flags"];
if header :contains "subject" "[list]" { fileinto :flags "\\Seen" "Lists"; }
`

// One cluster for every case: the users are independent.
func TestSieveEndToEnd(t *testing.T) {
	start := time.Now()
	c := newCluster(t, "alice", "bob", "carol", "dave", "erin", "frank", "gina", "hal", "ivan")
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))

	// 1. A script uploaded through node A over ManageSieve files mail that
	// arrives through node B's MX; node C lists and returns it.
	t.Run("FileIntoAcrossNodes", func(t *testing.T) {
		createMailbox(t, c, 0, "alice", "Lists")
		ms := dialSieve(t, c, 0, "alice")
		ms.putScript("lists", listsScript, true)

		deliverMX(t, c, 1, "a@remote.test", "alice", message("alice", "[list] weekly digest", ""), "Lists")
		deliverMX(t, c, 1, "a@remote.test", "alice", message("alice", "lunch tomorrow", ""), "INBOX")

		lists := mailbox(t, c, 1, "alice", "Lists")
		if got := subjects(lists); !slices.Equal(got, []string{"[list] weekly digest"}) {
			t.Fatalf("Lists holds %q, want the list message", got)
		}
		if lists[0].Flags.System&state.FlagSeen == 0 {
			t.Errorf("the filed message has flags %v, want \\Seen", lists[0].Flags.Strings())
		}
		inbox := mailbox(t, c, 2, "alice", "INBOX")
		if got := subjects(inbox); !slices.Equal(got, []string{"lunch tomorrow"}) {
			t.Fatalf("INBOX holds %q, want only the other message", got)
		}
		if inbox[0].Flags.System&state.FlagSeen != 0 {
			t.Errorf("the kept message is \\Seen: %v", inbox[0].Flags.Strings())
		}

		other := dialSieve(t, c, 2, "alice")
		if got := other.retry("LISTSCRIPTS"); !slices.Equal(got, []string{`"lists" ACTIVE`}) {
			t.Fatalf("LISTSCRIPTS on node C: %q", got)
		}
		got := other.retry(`GETSCRIPT "lists"`)
		if len(got) != 1 || got[0] != strconvQuote(listsScript) {
			t.Fatalf("GETSCRIPT on node C: %q, want %q", got, strconvQuote(listsScript))
		}
	})

	// 2. discard stores nothing; redirect sends the message out to the
	// sink and keeps no copy unless the script says keep.
	t.Run("DiscardAndRedirect", func(t *testing.T) {
		dialSieve(t, c, 1, "bob").putScript("drop", `if header :contains "subject" "spam" { discard; }`, true)
		sendMX(t, c, 2, "a@remote.test", addr("bob"), message("bob", "cheap spam", ""), nil)
		deliverMX(t, c, 2, "a@remote.test", "bob", message("bob", "real mail", ""), "INBOX")
		if got := subjects(mailbox(t, c, 0, "bob", "INBOX")); !slices.Equal(got, []string{"real mail"}) {
			t.Fatalf("bob's INBOX holds %q, want only the message not discarded", got)
		}

		dialSieve(t, c, 2, "carol").putScript("fwd", `redirect "carol.elsewhere@remote.test";`, true)
		dialSieve(t, c, 0, "dave").putScript("fwd", `redirect "dave.elsewhere@remote.test"; keep;`, true)
		forCarol := message("carol", "for carol", "")
		sendMX(t, c, 0, "a@remote.test", addr("carol"), forCarol, sentOut(t, c, "carol.elsewhere@remote.test", forCarol))
		deliverMX(t, c, 1, "a@remote.test", "dave", message("dave", "for dave", ""), "INBOX")
		waitQueueEmpty(t, c)

		for _, w := range []struct{ user, to, subject string }{
			{"carol", "carol.elsewhere@remote.test", "for carol"},
			{"dave", "dave.elsewhere@remote.test", "for dave"},
		} {
			got := sinkWith(c, w.to, "Subject: "+w.subject+"\r\n")
			if len(got) != 1 {
				t.Fatalf("the sink has %d copies of %q for %s, want 1 (all to it: %d)", len(got), w.subject, w.to, len(c.Sink().MessagesTo(w.to)))
			}
			if !strings.Contains(string(got[0].Data), "Body of "+w.subject+".") {
				t.Errorf("the redirected message lost its body:\n%s", got[0].Data)
			}
		}
		if got := subjects(mailbox(t, c, 1, "carol", "INBOX")); len(got) != 0 {
			t.Errorf("carol redirected without keep but holds %q", got)
		}
		if got := subjects(mailbox(t, c, 2, "dave", "INBOX")); !slices.Equal(got, []string{"for dave"}) {
			t.Errorf("dave redirected with keep but holds %q", got)
		}
	})

	// A redirect to the user's own address is a keep, not a loop; a run
	// past the redirect limit is a runtime error: an implicit keep, and
	// none of its redirects leaves.
	t.Run("RedirectSelfAndLimit", func(t *testing.T) {
		dialSieve(t, c, 0, "hal").putScript("self", `redirect "HAL@Example.test";`, true)
		deliverMX(t, c, 1, "a@remote.test", "hal", message("hal", "to myself", ""), "INBOX")
		var many strings.Builder
		for i := range 5 {
			fmt.Fprintf(&many, "redirect \"ivan.r%d@remote.test\";\n", i)
		}
		dialSieve(t, c, 1, "ivan").putScript("many", many.String(), true)
		deliverMX(t, c, 2, "a@remote.test", "ivan", message("ivan", "too many", ""), "INBOX")
		waitQueueEmpty(t, c)
		if got := subjects(mailbox(t, c, 2, "hal", "INBOX")); !slices.Equal(got, []string{"to myself"}) {
			t.Errorf("hal's INBOX holds %q after a redirect to himself", got)
		}
		if got := subjects(mailbox(t, c, 0, "ivan", "INBOX")); !slices.Equal(got, []string{"too many"}) {
			t.Errorf("ivan's INBOX holds %q after too many redirects", got)
		}
		for _, m := range c.Sink().Messages() {
			for _, to := range m.To {
				if strings.HasPrefix(to, "ivan.") || strings.HasPrefix(strings.ToLower(to), "hal@") {
					t.Errorf("a redirect left for %s", to)
				}
			}
		}
	})

	// 3. Vacation: one reply per sender cluster-wide, through the queue,
	// with the null sender; none to lists, bulk mail or bounces.
	t.Run("Vacation", func(t *testing.T) {
		dialSieve(t, c, 2, "erin").putScript("away", `require "vacation"; vacation :days 1 :subject "away" "I am away";`, true)
		const sender = "a@remote.test"
		deliverMX(t, c, 0, sender, "erin", message("erin", "hello erin", ""), "INBOX")
		waitQueueEmpty(t, c)
		replies := c.Sink().MessagesTo(sender)
		if len(replies) != 1 {
			t.Fatalf("the sink has %d messages to %s after the first message, want 1 reply", len(replies), sender)
		}
		r := replies[0]
		if r.From != "" {
			t.Errorf("the reply's MAIL FROM is <%s>, want <>", r.From)
		}
		if !slices.EqualFunc(r.To, []string{sender}, strings.EqualFold) {
			t.Errorf("the reply went to %q", r.To)
		}
		raw := string(r.Data)
		if v := headerValue(raw, "Auto-Submitted"); !strings.HasPrefix(strings.ToLower(v), "auto-replied") {
			t.Errorf("Auto-Submitted: %q, want auto-replied", v)
		}
		if v := headerValue(raw, "Subject"); v != "away" {
			t.Errorf("reply Subject: %q", v)
		}
		if v := headerValue(raw, "To"); !strings.Contains(strings.ToLower(v), sender) {
			t.Errorf("reply To: %q", v)
		}
		if !strings.Contains(raw, "I am away") {
			t.Errorf("the reply lacks its text:\n%s", raw)
		}

		// The same sender again through another node: already answered.
		deliverMX(t, c, 1, sender, "erin", message("erin", "hello again", ""), "INBOX")
		// A list, bulk mail and a bounce, from senders never answered.
		deliverMX(t, c, 2, "b@remote.test", "erin", message("erin", "list post", "List-Id: <news.remote.test>\r\n"), "INBOX")
		deliverMX(t, c, 0, "d@remote.test", "erin", message("erin", "bulk mail", "Precedence: bulk\r\n"), "INBOX")
		deliverMX(t, c, 1, "", "erin", message("erin", "a bounce", ""), "INBOX")
		// System senders, the user herself and automated mail get none.
		deliverMX(t, c, 0, "owner-news@remote.test", "erin", message("erin", "from a list owner", ""), "INBOX")
		deliverMX(t, c, 1, addr("erin"), "erin", message("erin", "from herself", ""), "INBOX")
		deliverMX(t, c, 2, "j@remote.test", "erin", message("erin", "automated", "Auto-Submitted: auto-generated\r\n"), "INBOX")
		// Mail that does not name erin in To or Cc (a Bcc) gets no reply.
		bcc := strings.Replace(message("erin", "bcc to erin", ""), "To: "+addr("erin"), "To: people@remote.test", 1)
		deliverMX(t, c, 0, "h@remote.test", "erin", bcc, "INBOX")
		// Mail to an alias of erin's names her too: it is answered.
		cluster.RetryIdempotent(t, "alias", func() error {
			return c.Node(0).Store().SetAlias(ctxT(t), "holidays@"+domain, []string{addr("erin")})
		})
		toAlias := strings.Replace(message("erin", "to the alias", ""), "To: "+addr("erin"), "To: holidays@"+domain, 1)
		sendMX(t, c, 1, "i@remote.test", "holidays@"+domain, toAlias, storedIn(t, c, 1, "erin", toAlias, "INBOX"))
		// A sender that must be answered: its reply proves the replies
		// above were not just slow (each is queued before the 250).
		deliverMX(t, c, 2, "f@remote.test", "erin", message("erin", "from f", ""), "INBOX")
		waitQueueEmpty(t, c)

		if got := len(c.Sink().MessagesTo(sender)); got != 1 {
			t.Errorf("the sink has %d replies to %s, want still 1", got, sender)
		}
		for _, who := range []string{"f@remote.test", "i@remote.test"} {
			if got := len(c.Sink().MessagesTo(who)); got != 1 {
				t.Errorf("the sink has %d replies to %s, want 1", got, who)
			}
		}
		for _, who := range []string{"b@remote.test", "d@remote.test", "h@remote.test", "owner-news@remote.test", addr("erin"), "j@remote.test"} {
			if got := c.Sink().MessagesTo(who); len(got) != 0 {
				t.Errorf("%s got %d replies; lists, bulk, system senders, the user, automated mail and Bcc get none", who, len(got))
			}
		}
		for _, m := range c.Sink().Messages() {
			if m.From == "" && !slices.ContainsFunc(m.To, func(s string) bool {
				return strings.EqualFold(s, sender) || strings.EqualFold(s, "f@remote.test") || strings.EqualFold(s, "i@remote.test")
			}) {
				t.Errorf("an unexpected null-sender message reached the sink: to %q\n%s", m.To, m.Data)
			}
		}
		// Every message is still delivered.
		got := subjects(mailbox(t, c, 0, "erin", "INBOX"))
		want := []string{"hello erin", "hello again", "list post", "bulk mail", "a bounce", "from a list owner", "from herself", "automated", "bcc to erin", "to the alias", "from f"}
		if !slices.Equal(got, want) {
			t.Errorf("erin's INBOX holds %q, want %q", got, want)
		}

		// A local sender through submission: the reply is delivered to
		// its INBOX by the pipeline, not queued, and not answered again.
		sendSubmission(t, c, 1, "bob", addr("erin"), message("erin", "from bob", ""))
		var reply []stored
		c.WaitFor("the vacation reply in bob's INBOX", func() bool {
			reply = nil
			for _, m := range mailbox(t, c, 2, "bob", "INBOX") {
				if headerValue(m.Body, "Subject") == "away" {
					reply = append(reply, m)
				}
			}
			return len(reply) > 0
		})
		if len(reply) != 1 || !strings.HasPrefix(headerValue(reply[0].Body, "Auto-Submitted"), "auto-replied") {
			t.Fatalf("bob got %d replies: %+v", len(reply), reply)
		}
		if rp := headerValue(reply[0].Body, "Return-Path"); rp != "" && rp != "<>" {
			t.Errorf("the local reply's Return-Path is %q, want <>", rp)
		}
	})

	// Three messages from one sender through the three nodes at once: the
	// cluster-wide claim lets exactly one reply out.
	t.Run("VacationConcurrent", func(t *testing.T) {
		const sender = "m@remote.test"
		var wg sync.WaitGroup
		errs, bodies := make([]error, 3), make([]string, 3)
		for i := range 3 {
			bodies[i] = message("erin", fmt.Sprintf("at once %d", i), "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = sendOnce(c.Node(i).Endpoint(node.EndpointSMTP), sender, []string{addr("erin")}, bodies[i])
			}()
		}
		wg.Wait()
		for i, err := range errs {
			// After an election, as a patient sender would: the reply
			// count holds however often a message was tried.
			var se *gosmtp.SMTPError
			switch {
			case err == nil:
			case !errors.As(err, &se) || se.Code != 451:
				t.Fatalf("send through node %d: %v", i, err)
			case strings.Contains(se.Message, "may have been stored"):
				cluster.Settle(t, c.Node(i))
				if !storedIn(t, c, i, "erin", bodies[i], "INBOX")() {
					deliverMX(t, c, i, sender, "erin", bodies[i], "INBOX")
				}
			default:
				deliverMX(t, c, i, sender, "erin", bodies[i], "INBOX")
			}
		}
		waitQueueEmpty(t, c)
		if got := len(c.Sink().MessagesTo(sender)); got != 1 {
			t.Errorf("%d replies reached %s, want exactly 1", got, sender)
		}
		var n int
		for _, m := range mailbox(t, c, 1, "erin", "INBOX") {
			if strings.HasPrefix(headerValue(m.Body, "Subject"), "at once ") {
				n++
			}
		}
		if n != 3 {
			t.Errorf("erin holds %d of the 3 messages", n)
		}
	})

	// One transaction for three accounts: each copy goes where its own
	// owner's script says (alice files it, bob discards it, carol's
	// redirect sends it out), and an account without a script keeps it.
	t.Run("ScriptsPerRecipient", func(t *testing.T) {
		body := message("alice", "[list] cheap spam", "")
		sendMXTo(t, c, 2, "a@remote.test", []string{addr("alice"), addr("bob"), addr("carol"), addr("frank")}, body,
			storedIn(t, c, 2, "frank", body, "INBOX"))
		waitQueueEmpty(t, c)
		id := headerValue(body, "Message-ID")
		count := func(user, box string) int {
			n := 0
			for _, m := range mailbox(t, c, 0, user, box) {
				if headerValue(m.Body, "Message-ID") == id {
					n++
				}
			}
			return n
		}
		if n := count("alice", "Lists"); n != 1 {
			t.Errorf("alice's Lists holds %d copies, want 1", n)
		}
		if n := count("alice", "INBOX"); n != 0 {
			t.Errorf("alice's INBOX holds %d copies, want 0", n)
		}
		if n := count("bob", "INBOX"); n != 0 {
			t.Errorf("bob discards but holds %d copies", n)
		}
		if n := count("carol", "INBOX"); n != 0 {
			t.Errorf("carol redirects but holds %d copies", n)
		}
		if n := len(sinkWith(c, "carol.elsewhere@remote.test", id)); n != 1 {
			t.Errorf("carol's redirect reached the sink %d times, want 1", n)
		}
		if n := count("frank", "INBOX"); n != 1 {
			t.Errorf("frank (no script) holds %d copies, want 1", n)
		}
	})

	// fileinto a mailbox that does not exist keeps the message in INBOX;
	// SETACTIVE "" switches filtering off at once on every node.
	t.Run("MissingMailboxAndDeactivate", func(t *testing.T) {
		ms := dialSieve(t, c, 0, "gina")
		ms.putScript("nowhere", `require "fileinto"; fileinto "Nowhere";`, true)
		deliverMX(t, c, 1, "a@remote.test", "gina", message("gina", "to nowhere", ""), "INBOX")
		if got := subjects(mailbox(t, c, 2, "gina", "INBOX")); !slices.Equal(got, []string{"to nowhere"}) {
			t.Fatalf("gina's INBOX holds %q, want the message filed into a missing mailbox", got)
		}
		ms.putScript("drop", `discard;`, true)
		sendMX(t, c, 2, "a@remote.test", addr("gina"), message("gina", "dropped", ""), nil)
		ms.retry(`SETACTIVE ""`)
		if got := ms.retry("LISTSCRIPTS"); !slices.Equal(got, []string{`"drop"`, `"nowhere"`}) {
			t.Errorf("LISTSCRIPTS after SETACTIVE \"\": %q", got)
		}
		deliverMX(t, c, 1, "a@remote.test", "gina", message("gina", "unfiltered", ""), "INBOX")
		if got := subjects(mailbox(t, c, 2, "gina", "INBOX")); !slices.Equal(got, []string{"to nowhere", "unfiltered"}) {
			t.Fatalf("gina's INBOX holds %q, want the message after deactivation and not the discarded one", got)
		}
		if st := ms.cmd(`DELETESCRIPT "drop"`); !strings.HasPrefix(st, "OK") {
			t.Errorf("DELETESCRIPT of an inactive script: %s", st)
		}
	})

	// 4. A script that does not compile is refused with a reason, by
	// PUTSCRIPT and CHECKSCRIPT, and nothing is stored.
	t.Run("BrokenScript", func(t *testing.T) {
		ms := dialSieve(t, c, 1, "frank")
		for _, bad := range []string{
			`require "fileinto"; fileinto "x"`,  // no semicolon
			`frobnicate;`,                       // unknown command
			`fileinto "Lists";`,                 // extension not required
			`require "nosuchext"; keep;`,        // unknown extension
			`if header :contains "subject" { }`, // missing key list
		} {
			st := ms.cmd(`PUTSCRIPT "bad" ` + literal(bad))
			if !strings.HasPrefix(st, "NO ") || len(st) < len("NO \"x\"") {
				t.Errorf("PUTSCRIPT %q: %q, want NO with a reason", bad, st)
			}
			st = ms.cmd(`CHECKSCRIPT ` + literal(bad))
			if !strings.HasPrefix(st, "NO ") || len(st) < len("NO \"x\"") {
				t.Errorf("CHECKSCRIPT %q: %q, want NO with a reason", bad, st)
			}
		}
		if st := ms.cmd(`CHECKSCRIPT ` + literal(listsScript)); !strings.HasPrefix(st, "OK") {
			t.Errorf("CHECKSCRIPT of a good script: %q", st)
		}
		if got := ms.retry("LISTSCRIPTS"); len(got) != 0 {
			t.Errorf("frank holds scripts after refused uploads: %q", got)
		}

		// The limits of the replicated state, told before the upload.
		huge := "# " + strings.Repeat("x", 64<<10) + "\r\nkeep;\r\n"
		if st := ms.cmd(`PUTSCRIPT "huge" ` + literal(huge)); !strings.HasPrefix(st, "NO (QUOTA/MAXSIZE)") {
			t.Errorf("PUTSCRIPT of %d octets: %q", len(huge), st)
		}
		if st := ms.cmd(`HAVESPACE "huge" 70000`); !strings.HasPrefix(st, "NO (QUOTA/MAXSIZE)") {
			t.Errorf("HAVESPACE for 70000 octets: %q", st)
		}
		for i := range 10 {
			ms.putScript(fmt.Sprintf("s%d", i), "keep;", false)
		}
		if st := ms.cmd(`HAVESPACE "s10" 10`); !strings.HasPrefix(st, "NO (QUOTA/MAXSCRIPTS)") {
			t.Errorf("HAVESPACE for an 11th script: %q", st)
		}
		if st := ms.cmd(`PUTSCRIPT "s10" ` + literal("keep;")); !strings.HasPrefix(st, "NO (QUOTA/MAXSCRIPTS)") {
			t.Errorf("PUTSCRIPT of an 11th script: %q", st)
		}
		if st := ms.cmd(`PUTSCRIPT "s9" ` + literal("discard;")); !strings.HasPrefix(st, "OK") {
			t.Errorf("PUTSCRIPT replacing the 10th script: %q", st)
		}
	})

	// 5. The admin API on another node lists a script uploaded over
	// ManageSieve and returns its text.
	t.Run("AdminAPI", func(t *testing.T) {
		cl := &api.Client{BaseURL: "http://" + c.Node(1).HTTPAddr(), Token: "test-admin-token"}
		var list []api.SieveScriptInfo
		cluster.Retry(t, "list alice's scripts", func() (err error) {
			list, err = cl.SieveScripts(ctxT(t), addr("alice"))
			return err
		})
		if !slices.Equal(list, []api.SieveScriptInfo{{Name: "lists", Active: true}}) {
			t.Fatalf("GET /api/users/alice/sieve on node B: %+v", list)
		}
		sc, err := cl.SieveScript(ctxT(t), addr("alice"), "lists")
		if err != nil || sc.Content != listsScript || !sc.Active {
			t.Fatalf("GET the script on node B: %+v %v", sc, err)
		}
		// The API refuses what ManageSieve refuses, with the same reason:
		// a broken script (400) and an 11th script for frank (409).
		var ae *api.Error
		err = cl.PutSieveScript(ctxT(t), addr("alice"), "broken", api.SievePutRequest{Content: "frobnicate;"})
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("PUT a broken script: %v", err)
		}
		err = cl.PutSieveScript(ctxT(t), addr("frank"), "s10", api.SievePutRequest{Content: "keep;"})
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Errorf("PUT an 11th script: %v", err)
		}
	})
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
