package pop3

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// TestPOP3OnEveryNode runs the user-visible POP3 behaviour through one
// 3-node cluster; each subtest has its own account. Node 3 (index 2) is
// configured to leave retrieved messages unseen.
func TestPOP3OnEveryNode(t *testing.T) {
	c := cluster.New(t, cluster.Options{Configure: func(i int, cfg *node.Config) {
		cfg.POP3.LeaveUnseen = i == 2
	}})
	t.Run("every command on the wire, bytes as delivered", func(t *testing.T) { testEveryCommand(t, c) })
	t.Run("RETR returns what SMTP delivered", func(t *testing.T) { testThroughSMTP(t, c) })
	t.Run("QUIT deletes atomically and RSET undoes", func(t *testing.T) { testQuitAndRset(t, c) })
	t.Run("a dropped connection deletes nothing", func(t *testing.T) { testDroppedConnection(t, c) })
	t.Run("sessions on two nodes at once", func(t *testing.T) { testTwoNodes(t, c) })
	t.Run("RETR marks Seen for IMAP unless configured", func(t *testing.T) { testSeen(t, c) })
}

func testEveryCommand(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "alice")
	raw := [][]byte{
		smtpMessage(1, 2_000),
		smtpMessage(2, 300_000), // several read chunks
		[]byte("Subject: bare LF\n\nappended with bare LFs\n.dot line\nno final newline"),
		[]byte("Subject: header only\r\n"),
	}
	for i, b := range raw {
		deliver(t, c.Node(i%3), "alice", b)
	}
	for _, implicitTLS := range []bool{false, true} {
		for i := range 3 {
			cl := dial(t, c, i, implicitTLS)
			caps := must[[]string](t)(cl.Multi("CAPA"))
			want := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN", "STLS", "IMPLEMENTATION mailcluster"}
			if implicitTLS {
				want = slices.DeleteFunc(want, func(s string) bool { return s == "STLS" })
			}
			if !slices.Equal(caps, want) {
				t.Fatalf("CAPA on %s (tls=%v): %q", c.Members[i].ID, implicitTLS, caps)
			}
			if err := cl.Login(addr("alice"), password); err != nil {
				t.Fatal(err)
			}
			count, _, err := cl.Stat()
			check(t, err)
			if count != len(raw) {
				t.Fatalf("STAT on %s: %d messages, want %d", c.Members[i].ID, count, len(raw))
			}
			got := retrAll(t, cl)
			total := int64(0)
			for k := range raw {
				total += int64(len(got[k]))
				if want := wireForm(raw[k]); !bytes.Equal(got[k], want) {
					t.Fatalf("RETR %d on %s: %d octets differ from what was delivered (%d)", k+1, c.Members[i].ID, len(got[k]), len(want))
				}
			}
			if _, size, _ := cl.Stat(); size != total {
				t.Fatalf("STAT size %d, RETR sent %d", size, total)
			}
			// SMTP bodies come back bit for bit.
			if !bytes.Equal(got[0], raw[0]) || !bytes.Equal(got[1], raw[1]) {
				t.Fatal("an SMTP-delivered body changed on the way")
			}
			for k := range raw {
				for _, n := range []int{0, 1, 3, 100000} {
					top := must[[]byte](t)(cl.Top(k+1, n))
					if want := topOf(wireForm(raw[k]), n); !bytes.Equal(top, want) {
						t.Fatalf("TOP %d %d: %q, want %q", k+1, n, top, want)
					}
				}
			}
			for _, bad := range []string{"RETR 0", "RETR 5", "TOP 1", "DELE x", "LIST 1 2", "XYZZY"} {
				if _, err := cl.Cmd(bad); !IsErr(err, "-ERR ") {
					t.Fatalf("%s: %v", bad, err)
				}
			}
			must[string](t)(cl.Cmd("NOOP"))
			if s := must[string](t)(cl.Quit()); !strings.HasPrefix(s, "+OK") {
				t.Fatal(s)
			}
		}
	}
	// STLS on the plain port, then the same bytes.
	cl := dial(t, c, 1, false)
	if err := cl.StartTLS(c.ClientTLS()); err != nil {
		t.Fatal(err)
	}
	if caps := must[[]string](t)(cl.Multi("CAPA")); slices.Contains(caps, "STLS") {
		t.Fatalf("STLS offered twice: %q", caps)
	}
	if err := cl.Login(addr("alice"), password); err != nil {
		t.Fatal(err)
	}
	if got := retrAll(t, cl); !bytes.Equal(got[1], raw[1]) {
		t.Fatal("RETR after STLS differs")
	}
	cl.Quit()
}

// testThroughSMTP sends mail through a node's SMTP port (MX) and fetches
// it by POP3 on another node: RETR sends exactly the stored octets, which
// are what the sender sent after the trace headers SMTP puts on top.
func testThroughSMTP(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "smtp")
	sent := string(smtpMessage(7, 20_000)) // has lines that start with dots
	mx, err := smtp.Dial(c.Node(0).Endpoint(node.EndpointSMTP))
	if err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	check(t, mx.Mail("sender@remote.test", nil))
	check(t, mx.Rcpt(addr("smtp"), nil))
	w, err := mx.Data()
	check(t, err)
	_, err = io.WriteString(w, sent)
	check(t, err)
	check(t, w.Close()) // 250: committed
	check(t, mx.Quit())

	cl := login(t, c, 1, "smtp")
	got := retrAll(t, cl)
	cl.Quit()
	if len(got) != 1 {
		t.Fatalf("POP3 lists %d messages, want 1", len(got))
	}
	// The stored octets, read on the third node.
	s := c.Node(2).Store()
	mb, err := s.OpenMailbox(ctxT(t), addr("smtp"), "INBOX")
	check(t, err)
	var stored []byte
	check(t, s.Messages(ctxT(t), addr("smtp"), mb.ID, 1, 0, func(m state.Message) error {
		b, err := s.OpenBody(ctxT(t), m.Blob)
		if err != nil {
			return err
		}
		defer b.Close()
		stored, err = io.ReadAll(b)
		return err
	}))
	if !bytes.Equal(got[0], wireForm(stored)) || !bytes.Equal(got[0], stored) {
		t.Fatalf("RETR sent %d octets, the store holds %d", len(got[0]), len(stored))
	}
	if !strings.HasSuffix(string(got[0]), sent) {
		t.Fatalf("RETR does not end with what the sender sent:\n%.300s", got[0])
	}
}

func testQuitAndRset(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "rset")
	for i := range 5 {
		deliver(t, c.Node(0), "rset", smtpMessage(i, 500))
	}
	before, _ := inbox(t, c, 0, "rset")
	cl := login(t, c, 1, "rset")
	for n := 1; n <= 5; n++ {
		check(t, cl.Dele(n))
	}
	if n, _, _ := cl.Stat(); n != 0 {
		t.Fatalf("STAT after DELE of all: %d", n)
	}
	must[string](t)(cl.Cmd("RSET"))
	if n, _, _ := cl.Stat(); n != 5 {
		t.Fatalf("STAT after RSET: %d", n)
	}
	// Nothing is deleted before QUIT, on any node.
	check(t, cl.Dele(2))
	check(t, cl.Dele(4))
	for i := range 3 {
		if now, _ := inbox(t, c, i, "rset"); !sameUIDs(now, before) {
			t.Fatalf("DELE deleted before QUIT, seen on %s", c.Members[i].ID)
		}
	}
	if s := must[string](t)(cl.Quit()); s != "+OK node2.test POP3 server signing off (2 messages deleted)" {
		t.Fatal(s)
	}
	want := []uint32{before[0], before[2], before[4]}
	for i := range 3 {
		if now, _ := inbox(t, c, i, "rset"); !sameUIDs(now, want) {
			t.Fatalf("after QUIT %s has %v, want %v", c.Members[i].ID, now, want)
		}
	}
}

func testDroppedConnection(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "dropped")
	for i := range 3 {
		deliver(t, c.Node(i), "dropped", smtpMessage(i, 500))
	}
	before, _ := inbox(t, c, 0, "dropped")
	cl := login(t, c, 0, "dropped")
	for n := 1; n <= 3; n++ {
		check(t, cl.Dele(n))
	}
	cl.Close()
	// A new session (on another node) still sees everything.
	next := login(t, c, 2, "dropped")
	if n, _, _ := next.Stat(); n != 3 {
		t.Fatalf("after a dropped connection: %d messages, want 3", n)
	}
	next.Quit()
	if now, _ := inbox(t, c, 1, "dropped"); !sameUIDs(now, before) {
		t.Fatalf("dropped connection deleted: %v, want %v", now, before)
	}
}

func testTwoNodes(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "twice")
	var raw [][]byte
	for i := range 4 {
		raw = append(raw, smtpMessage(i, 1000))
		deliver(t, c.Node(i%3), "twice", raw[i])
	}
	a := login(t, c, 0, "twice")
	b := login(t, c, 1, "twice")
	uidlA := must[map[int]string](t)(a.UIDL())
	uidlB := must[map[int]string](t)(b.UIDL())
	if !maps.Equal(uidlA, uidlB) {
		t.Fatalf("UIDL differs between nodes: %v vs %v", uidlA, uidlB)
	}
	// A message delivered now is in neither session's view.
	deliver(t, c.Node(2), "twice", smtpMessage(99, 100))
	if n, _, _ := a.Stat(); n != 4 {
		t.Fatalf("session view grew to %d", n)
	}
	check(t, a.Dele(1))
	check(t, a.Dele(2))
	check(t, b.Dele(2)) // both delete message 2
	check(t, b.Dele(3))
	if s := must[string](t)(a.Quit()); !strings.Contains(s, "(2 messages deleted)") {
		t.Fatal(s)
	}
	// b still lists message 1 (its view) but cannot fetch it any more.
	c.WaitFor("node2 to apply a's QUIT", func() bool {
		_, err := b.Cmd("TOP 1 0")
		if err == nil {
			_, _ = b.message()
		}
		return IsErr(err, "-ERR message 1 was deleted by another session")
	})
	if got, _, err := b.Retr(4); err != nil || !bytes.Equal(got, raw[3]) {
		t.Fatalf("RETR 4 in the second session: %v", err)
	}
	if s := must[string](t)(b.Quit()); !strings.HasPrefix(s, "+OK") {
		t.Fatal(s)
	}
	// 1, 2, 3 are gone once each; 4 and the late one are left.
	cl := login(t, c, 2, "twice")
	if got := retrAll(t, cl); len(got) != 2 || !bytes.Equal(got[0], raw[3]) {
		t.Fatalf("after two sessions: %d messages left, want 2 (the 4th and the late one)", len(got))
	}
	cl.Quit()
}

func testSeen(t *testing.T, c *cluster.Cluster) {
	addUsers(t, c, "seen")
	for i := range 3 {
		deliver(t, c.Node(0), "seen", smtpMessage(i, 300))
	}
	uids, _ := inbox(t, c, 0, "seen")
	// Node 1 (default): RETR 1 marks \Seen; TOP 2 does not.
	cl := login(t, c, 0, "seen")
	if _, _, err := cl.Retr(1); err != nil {
		t.Fatal(err)
	}
	must[[]byte](t)(cl.Top(2, 5))
	cl.Quit()
	c.WaitFor(`message 1 \Seen on every node`, func() bool {
		for i := range 3 {
			if _, flags := inbox(t, c, i, "seen"); flags[uids[0]].System&state.FlagSeen == 0 {
				return false
			}
		}
		return true
	})
	// Node 3 leaves messages unseen: RETR 3 there changes nothing.
	cl = login(t, c, 2, "seen")
	if _, _, err := cl.Retr(3); err != nil {
		t.Fatal(err)
	}
	cl.Quit()
	// Node 3 never proposes a flag change. (Were it to, the change would
	// follow QUIT at once; one more committed write and a barrier make it
	// very likely to be visible here.)
	deliver(t, c.Node(2), "seen", smtpMessage(9, 100))
	_, flags := inbox(t, c, 0, "seen")
	for k, uid := range uids[1:] {
		if flags[uid].System&state.FlagSeen != 0 {
			t.Fatalf("message %d is \\Seen: %v", k+2, flags[uid].Strings())
		}
	}
}

// TestUIDLStableAcrossNodesAndRestarts: the same UIDLs from every node,
// before and after a node restarts, and after other messages are deleted.
func TestUIDLStableAcrossNodesAndRestarts(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	addUsers(t, c, "alice")
	for i := range 5 {
		deliver(t, c.Node(i%3), "alice", smtpMessage(i, 200))
	}
	uidls := func(i int) map[int]string {
		cl := login(t, c, i, "alice")
		defer cl.Quit()
		return must[map[int]string](t)(cl.UIDL())
	}
	want := uidls(0)
	if len(want) != 5 {
		t.Fatalf("UIDL listed %d", len(want))
	}
	seen := map[string]bool{}
	for _, id := range want {
		if seen[id] || len(id) == 0 || len(id) > 70 || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			t.Fatalf("bad or repeated unique-id %q", id)
		}
		seen[id] = true
	}
	for i := 1; i < 3; i++ {
		if got := uidls(i); !maps.Equal(got, want) {
			t.Fatalf("UIDL on %s: %v, want %v", c.Members[i].ID, got, want)
		}
	}
	victim := c.Follower()
	c.Kill(victim)
	c.Restart(victim)
	c.WaitForVoters(3)
	for i := range 3 {
		if got := uidls(i); !maps.Equal(got, want) {
			t.Fatalf("UIDL on %s after restart: %v, want %v", c.Members[i].ID, got, want)
		}
	}
	// Deleting message 2 renumbers the rest but keeps their unique-ids.
	cl := login(t, c, 0, "alice")
	check(t, cl.Dele(2))
	cl.Quit()
	got := uidls(victim)
	if len(got) != 4 || got[1] != want[1] || got[2] != want[3] || got[4] != want[5] {
		t.Fatalf("after deleting message 2: %v (before %v)", got, want)
	}
}

// TestNoQuorumAtQuit: a node cut off from the others answers QUIT with
// -ERR [SYS/TEMP] and deletes nothing; a login there fails temporarily.
func TestNoQuorumAtQuit(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	addUsers(t, c, "alice")
	for i := range 3 {
		deliver(t, c.Node(0), "alice", smtpMessage(i, 300))
	}
	before, _ := inbox(t, c, 0, "alice")
	f := c.Follower()
	cl := login(t, c, f, "alice")
	if _, _, err := cl.Retr(1); err != nil {
		t.Fatal(err)
	}
	check(t, cl.Dele(1))
	check(t, cl.Dele(3))
	others := c.CutOff(f)
	s, err := cl.Quit()
	if !IsErr(err, "-ERR [SYS/TEMP] ") {
		t.Fatalf("QUIT without quorum: %q, %v", s, err)
	}
	late := dial(t, c, f, false)
	if err := late.Login(addr("alice"), password); !IsErr(err, "-ERR [SYS/TEMP] ") {
		t.Fatalf("login without quorum: %v", err)
	}
	late.Close()
	c.Heal()
	// The leader backs off replicating to a node it could not reach: wait
	// until the healed node applies a new entry again.
	l := c.Node(c.LeaderAmong(c.Running()))
	cluster.RetryIdempotent(t, "add healed.test", func() error {
		if err := l.Store().AddDomain(ctxT(t), "healed.test"); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil // an earlier attempt of unknown outcome was committed
	})
	c.WaitApplied(l.Consensus().AppliedIndex())
	for i := range 3 {
		if now, _ := inbox(t, c, i, "alice"); !sameUIDs(now, before) {
			t.Fatalf("after a failed QUIT %s has %v, want all of %v", c.Members[i].ID, now, before)
		}
	}
	// Once healed, the same node deletes. An election meanwhile can make
	// the QUIT fail temporarily: "unavailable" deleted nothing, so the
	// session is run again; after "may have been made" look first.
	cluster.WaitFor(t, "a QUIT that deletes through "+c.Members[f].ID, cluster.Timeout, func() bool {
		cl = login(t, c, f, "alice")
		check(t, cl.Dele(1))
		s, err := cl.Quit()
		switch {
		case err == nil:
			if !strings.Contains(s, "(1 messages deleted)") {
				t.Fatal(s)
			}
			return true
		case IsErr(err, "-ERR [SYS/TEMP] ") && strings.Contains(err.Error(), "may have been made"):
			cluster.Settle(t, c.Node(f))
			now, _ := inbox(t, c, f, "alice")
			return len(now) < len(before)
		case IsErr(err, "-ERR [SYS/TEMP] "):
			return false
		}
		t.Fatalf("QUIT after the heal: %v", err)
		return false
	})
	if now, _ := inbox(t, c, others[0], "alice"); len(now) != 2 {
		t.Fatalf("after healing: %v", now)
	}
}
