package imap_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// multipart is a message with the structures clients meet: alternative
// text, a base64 attachment, an encapsulated message, encoded words.
const multipart = "From: =?utf-8?q?J=C3=B6rg?= Sender <joerg@remote.test>\r\n" +
	"To: bob@example.test, \"Carol\" <carol@example.test>\r\n" +
	"Cc: dave@example.test\r\n" +
	"Subject: =?utf-8?q?Quarterly_r=C3=A9port?=\r\n" +
	"Date: Tue, 03 Mar 2026 09:30:00 +0000\r\n" +
	"Message-ID: <multi@remote.test>\r\n" +
	"In-Reply-To: <parent@remote.test>\r\n" +
	"X-Tracking: 42\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=\"inner\"\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"The numbers are in: caf=C3=A9 revenue up.\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"\r\n" +
	"<p>The numbers are in</p>\r\n" +
	"--inner--\r\n" +
	"\r\n" +
	"--outer\r\n" +
	"Content-Type: application/octet-stream; name=\"data.bin\"\r\n" +
	"Content-Disposition: attachment; filename=\"data.bin\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"AAECAwQFBgcICQ==\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"From: inner@remote.test\r\n" +
	"Subject: Forwarded note\r\n" +
	"Date: Mon, 02 Mar 2026 08:00:00 +0000\r\n" +
	"\r\n" +
	"Inner secret words.\r\n" +
	"--outer--\r\n"

// TestCommands covers every command of the issue on the wire, on one
// shared cluster (each subtest has its own account).
func TestCommands(t *testing.T) {
	e := newEnv(t, cluster.Options{})

	t.Run("capabilities and login", func(t *testing.T) {
		u := e.user(t, "caps")
		c := e.dialTLS(t, 0, "", nil)
		caps, err := c.Capability().Wait()
		if err != nil {
			t.Fatal(err)
		}
		if !caps.Has("AUTH=PLAIN") || caps.Has(imap.CapLoginDisabled) || caps.Has(imap.CapStartTLS) {
			t.Fatalf("implicit TLS, before login: %v", caps)
		}
		if err := c.Login(u, "wrong password").Wait(); err == nil {
			t.Fatal("wrong password accepted")
		} else {
			expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeAuthenticationFailed)
		}
		if err := c.Authenticate(sasl.NewPlainClient("", u, password)); err != nil {
			t.Fatalf("AUTHENTICATE PLAIN: %v", err)
		}
		caps, err = c.Capability().Wait()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []imap.Cap{"IMAP4rev1", "IMAP4rev2", "IDLE", "NAMESPACE", "UIDPLUS", "ESEARCH", "SEARCHRES",
			"LIST-EXTENDED", "LIST-STATUS", "MOVE", "STATUS=SIZE", "BINARY", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
			"LITERAL+", "UNAUTHENTICATE", "UNSELECT", "UTF8=ACCEPT", "ENABLE"} {
			if !caps.Has(want) {
				t.Errorf("capability %s missing from %v", want, caps)
			}
		}
		if limit, ok := caps.AppendLimit(); !ok || limit == nil || *limit != 50<<20 {
			t.Errorf("APPENDLIMIT: %v %v", limit, ok)
		}
		ns, err := c.Namespace().Wait()
		if err != nil || len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' || ns.Personal[0].Prefix != "" {
			t.Fatalf("NAMESPACE: %+v %v", ns, err)
		}
		// UNAUTHENTICATE, then another account on the same connection.
		other := e.user(t, "caps2")
		if err := c.Unauthenticate().Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err == nil {
			t.Fatal("SELECT allowed after UNAUTHENTICATE")
		}
		if err := c.Login(other, password).Wait(); err != nil {
			t.Fatal(err)
		}
		mustSelect(t, c, "INBOX", false)

		// Plain port from loopback: LOGIN allowed without TLS.
		p := e.dialPlain(t, 1, nil)
		if err := p.Login(u, password).Wait(); err != nil {
			t.Fatalf("LOGIN over plain loopback: %v", err)
		}
	})

	t.Run("mailboxes", func(t *testing.T) {
		u := e.user(t, "boxes")
		c := e.dialTLS(t, 1, u, nil)
		for _, name := range []string{"Projects/2026/Q1", "Projects/Old", "Travel"} {
			if err := c.Create(name, nil).Wait(); err != nil {
				t.Fatalf("CREATE %s: %v", name, err)
			}
		}
		if err := c.Create("Projects/", nil).Wait(); err == nil {
			t.Fatal("CREATE of an existing parent (with trailing separator) succeeded")
		} else {
			expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists)
		}
		if err := c.Create("Receipts", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrArchive}}).Wait(); err != nil {
			t.Fatalf("CREATE (USE (\\Archive)): %v", err)
		}
		if err := c.Create("Everything", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrAll}}).Wait(); err == nil {
			t.Fatal("CREATE (USE (\\All)) accepted without a virtual mailbox")
		}
		if err := c.Create("bad*name", nil).Wait(); err == nil {
			t.Fatal("CREATE with a wildcard in the name accepted")
		}
		list := func(ref, pattern string, opts *imap.ListOptions) map[string][]imap.MailboxAttr {
			t.Helper()
			l, err := c.List(ref, pattern, opts).Collect()
			if err != nil {
				t.Fatalf("LIST %q %q: %v", ref, pattern, err)
			}
			out := map[string][]imap.MailboxAttr{}
			for _, d := range l {
				if d.Delim != '/' {
					t.Fatalf("separator %q", d.Delim)
				}
				out[d.Mailbox] = d.Attrs
			}
			return out
		}
		all := list("", "*", nil)
		for _, name := range []string{"INBOX", "Projects", "Projects/2026", "Projects/2026/Q1", "Projects/Old", "Travel", "Sent", "Trash", "Receipts"} {
			if _, ok := all[name]; !ok {
				t.Errorf("LIST * misses %s: %v", name, all)
			}
		}
		if !slices.Contains(all["Projects"], imap.MailboxAttrHasChildren) || !slices.Contains(all["Travel"], imap.MailboxAttrHasNoChildren) {
			t.Errorf("children attributes: %v", all)
		}
		if !slices.Contains(all["Sent"], imap.MailboxAttrSent) || !slices.Contains(all["Receipts"], imap.MailboxAttrArchive) {
			t.Errorf("special-use attributes: %v", all)
		}
		if top := list("", "%", nil); len(top) != 9 || top["Projects/Old"] != nil {
			// INBOX Archive Drafts Junk Sent Trash Projects Travel Receipts
			t.Errorf("LIST %%: %v", top)
		}
		if sub := list("Projects", "%", nil); len(sub) != 2 {
			t.Errorf("LIST Projects %%: %v", sub)
		}
		if in := list("", "inbox", nil); len(in) != 1 {
			t.Errorf("LIST inbox (any case): %v", in)
		}
		if root, err := c.List("", "", nil).Collect(); err != nil || len(root) != 1 || root[0].Delim != '/' {
			t.Errorf(`LIST "" "": %+v %v`, root, err)
		}
		// SPECIAL-USE selection and LIST-STATUS.
		if su := list("", "*", &imap.ListOptions{SelectSpecialUse: true}); len(su) != 6 {
			t.Errorf("LIST (SPECIAL-USE): %v", su)
		}
		st, err := c.List("", "Travel", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, UIDNext: true}}).Collect()
		if err != nil || len(st) != 1 || st[0].Status == nil || *st[0].Status.NumMessages != 0 || st[0].Status.UIDNext != 1 {
			t.Errorf("LIST RETURN (STATUS): %+v %v", st, err)
		}
		// RENAME with children, DELETE refusals.
		if err := c.Rename("Projects", "Work", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		after := list("", "*", nil)
		if _, ok := after["Work/2026/Q1"]; !ok || after["Projects"] != nil {
			t.Fatalf("after RENAME: %v", after)
		}
		expectCode(t, c.Delete("Work").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeHasChildren)
		expectCode(t, c.Delete("Nope").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent)
		expectCode(t, c.Delete("INBOX").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeCannot)
		expectCode(t, c.Rename("Travel", "Work", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists)
		if err := c.Delete("Work/Old").Wait(); err != nil {
			t.Fatal(err)
		}
		_, err = c.Select("Nope", nil).Wait()
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent)
		_, err = tryAppend(c, "Nope", message("x", "y"), nil)
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeTryCreate)

		// INBOX's special rename: its messages move, INBOX stays, empty.
		for i := range 3 {
			appendMsg(t, c, "INBOX", message(fmt.Sprint("inbox ", i), "b"), nil)
		}
		before := mustSelect(t, c, "INBOX", true)
		if err := c.Unselect().Wait(); err != nil {
			t.Fatal(err)
		}
		if err := c.Rename("INBOX", "Old-Inbox", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		inbox := mustSelect(t, c, "INBOX", false)
		if inbox.NumMessages != 0 || inbox.UIDValidity != before.UIDValidity || inbox.UIDNext != before.UIDNext {
			t.Fatalf("INBOX after its rename: %+v (before %+v)", inbox, before)
		}
		if old := mustSelect(t, c, "Old-Inbox", false); old.NumMessages != 3 {
			t.Fatalf("renamed INBOX holds %d messages", old.NumMessages)
		}

		// SUBSCRIBE, LSUB, LIST (SUBSCRIBED).
		for _, name := range []string{"Work/2026/Q1", "Travel", "Gone/Child"} {
			if err := c.Subscribe(name).Wait(); err != nil {
				t.Fatalf("SUBSCRIBE %s: %v", name, err)
			}
		}
		if err := c.Unsubscribe("Travel").Wait(); err != nil {
			t.Fatal(err)
		}
		subs := list("", "*", &imap.ListOptions{SelectSubscribed: true})
		if !slices.Contains(subs["Work/2026/Q1"], imap.MailboxAttrSubscribed) || subs["Travel"] != nil ||
			!slices.Contains(subs["Gone/Child"], imap.MailboxAttrNonExistent) {
			t.Errorf("LIST (SUBSCRIBED): %v", subs)
		}
		rec := list("", "%", &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true})
		if rec["Work"] == nil {
			t.Errorf("LIST (SUBSCRIBED RECURSIVEMATCH) %%: %v", rec)
		}
		r := e.raw(t, 1, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		lsub := r.cmd("b", `LSUB "" "*"`)
		if !slices.Contains(lsub, `* LSUB () "/" "Work/2026/Q1"`) || !slices.Contains(lsub, `* LSUB () "/" "Gone/Child"`) ||
			slices.Contains(lsub, `* LSUB () "/" "Travel"`) || !slices.Contains(lsub, `* LSUB () "/" INBOX`) {
			t.Errorf("LSUB *: %q", lsub)
		}
		lsub = r.cmd("c", `LSUB "" "%"`)
		if !slices.Contains(lsub, `* LSUB (\Noselect) "/" "Work"`) || !slices.Contains(lsub, `* LSUB (\Noselect) "/" "Gone"`) {
			t.Errorf("LSUB %% lists unsubscribed parents as \\Noselect: %q", lsub)
		}
	})

	t.Run("status and select", func(t *testing.T) {
		u := e.user(t, "status")
		for i := range 4 {
			e.deliver(t, i%3, u, message(fmt.Sprint("m", i), strings.Repeat("x", 100*i)))
		}
		c := e.dialTLS(t, 2, u, nil)
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDNext: true, UIDValidity: true,
			Size: true, NumDeleted: true, AppendLimit: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if *st.NumMessages != 4 || *st.NumUnseen != 4 || st.UIDNext != 5 || *st.NumDeleted != 0 || *st.Size < 600 || *st.AppendLimit != 50<<20 {
			t.Fatalf("STATUS: messages %d unseen %d uidnext %d deleted %d size %d", *st.NumMessages, *st.NumUnseen, st.UIDNext, *st.NumDeleted, *st.Size)
		}
		r := e.raw(t, 2, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		if got := r.cmd("s", "STATUS INBOX (RECENT DELETED-STORAGE)"); got[0] != "* STATUS INBOX (DELETED-STORAGE 0 RECENT 4)" {
			t.Errorf("STATUS RECENT: %q", got)
		}
		sel := strings.Join(r.cmd("b", "SELECT INBOX"), "\n")
		for _, want := range []string{"* 4 EXISTS", "* 4 RECENT", "* OK [UNSEEN 1]", "* OK [UIDNEXT 5]", "[PERMANENTFLAGS (", `\*)]`, "b OK [READ-WRITE]"} {
			if !strings.Contains(sel, want) {
				t.Errorf("SELECT lacks %q:\n%s", want, sel)
			}
		}
		// \Recent went to that session: another one sees none.
		if d := mustSelect(t, c, "INBOX", false); d.NumMessages != 4 {
			t.Fatalf("second SELECT: %+v", d)
		}
		r2 := e.raw(t, 0, true)
		r2.cmd("a", "LOGIN "+u+" \""+password+"\"")
		if sel := strings.Join(r2.cmd("b", "EXAMINE INBOX"), "\n"); !strings.Contains(sel, "* 0 RECENT") || !strings.Contains(sel, "[READ-ONLY]") ||
			!strings.Contains(sel, "[PERMANENTFLAGS ()]") {
			t.Errorf("EXAMINE after another session claimed \\Recent:\n%s", sel)
		}
		got := strings.Join(r.cmd("c", "FETCH 1:* (FLAGS)"), "\n")
		if strings.Count(got, `\Recent`) != 4 {
			t.Errorf("the claiming session shows \\Recent on its messages:\n%s", got)
		}
		// IMAP4rev2: no RECENT, a LIST in SELECT.
		r3 := e.raw(t, 0, true)
		r3.cmd("a", "LOGIN "+u+" \""+password+"\"")
		r3.cmd("b", "ENABLE IMAP4rev2")
		sel3 := strings.Join(r3.cmd("c", "SELECT INBOX"), "\n")
		if strings.Contains(sel3, "RECENT") || !strings.Contains(sel3, `* LIST (\HasNoChildren) "/" INBOX`) {
			t.Errorf("IMAP4rev2 SELECT:\n%s", sel3)
		}
	})

	t.Run("fetch", func(t *testing.T) {
		u := e.user(t, "fetch")
		c := e.dialTLS(t, 0, u, nil)
		date := time.Date(2026, 1, 15, 8, 30, 0, 0, time.FixedZone("", 3600))
		ad := appendMsg(t, c, "INBOX", []byte(multipart), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged, "$Work"}, Time: date})
		if ad.UID != 1 || ad.UIDValidity == 0 {
			t.Fatalf("APPENDUID %+v", ad)
		}
		mustSelect(t, c, "INBOX", false)
		sections := []*imap.FetchItemBodySection{
			{Peek: true},
			{Peek: true, Specifier: imap.PartSpecifierHeader},
			{Peek: true, Specifier: imap.PartSpecifierText},
			{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "message-id"}},
			{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject", "X-Tracking"}},
			{Peek: true, Part: []int{1}},
			{Peek: true, Part: []int{1, 1}},
			{Peek: true, Part: []int{1, 2}, Specifier: imap.PartSpecifierMIME},
			{Peek: true, Part: []int{2}},
			{Peek: true, Part: []int{3}},
			{Peek: true, Part: []int{3}, Specifier: imap.PartSpecifierHeader},
			{Peek: true, Part: []int{3}, Specifier: imap.PartSpecifierText},
			{Peek: true, Part: []int{3}, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}},
			{Peek: true, Partial: &imap.SectionPartial{Offset: 10, Size: 25}},
			{Peek: true, Part: []int{1, 1}, Partial: &imap.SectionPartial{Offset: 4, Size: 1000}},
			{Peek: true, Partial: &imap.SectionPartial{Offset: 1 << 20, Size: 10}},
		}
		msgs := fetch(t, c, imap.UIDSetNum(ad.UID), &imap.FetchOptions{
			UID: true, Flags: true, Envelope: true, InternalDate: true, RFC822Size: true,
			BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
			BodySection:   sections,
			BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1, 1}, Peek: true}, {Part: []int{2}, Peek: true},
				{Part: []int{2}, Peek: true, Partial: &imap.SectionPartial{Offset: 2, Size: 3}}},
			BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{1, 1}}, {Part: []int{2}}},
		})
		if len(msgs) != 1 {
			t.Fatalf("%d messages", len(msgs))
		}
		m := msgs[0]
		if m.UID != ad.UID || m.RFC822Size != int64(len(multipart)) || !m.InternalDate.Equal(date) {
			t.Errorf("UID %d size %d date %v", m.UID, m.RFC822Size, m.InternalDate)
		}
		if !hasFlag(m.Flags, imap.FlagFlagged) || !hasFlag(m.Flags, "$Work") || hasFlag(m.Flags, imap.FlagSeen) {
			t.Errorf("FLAGS %v", m.Flags)
		}
		env := m.Envelope
		if env.Subject != "Quarterly réport" || len(env.From) != 1 || env.From[0].Name != "Jörg Sender" || env.From[0].Host != "remote.test" ||
			len(env.To) != 2 || env.To[1].Name != "Carol" || len(env.Cc) != 1 || env.MessageID != "multi@remote.test" ||
			len(env.InReplyTo) != 1 || env.InReplyTo[0] != "parent@remote.test" || env.Date.Day() != 3 || len(env.Sender) != 1 {
			t.Errorf("ENVELOPE %+v", env)
		}
		want := imapserver.ExtractBodyStructure(strings.NewReader(multipart))
		if got := m.BodyStructure; got == nil || got.MediaType() != want.MediaType() {
			t.Fatalf("BODYSTRUCTURE %v", got)
		}
		var parts []string
		m.BodyStructure.Walk(func(path []int, p imap.BodyStructure) bool {
			parts = append(parts, fmt.Sprint(path, p.MediaType()))
			return true
		})
		var wantParts []string
		want.Walk(func(path []int, p imap.BodyStructure) bool {
			wantParts = append(wantParts, fmt.Sprint(path, p.MediaType()))
			return true
		})
		if !slices.Equal(parts, wantParts) {
			t.Errorf("structure %v, go-imap %v", parts, wantParts)
		}
		for _, sec := range sections {
			got := m.FindBodySection(sec)
			exp := imapserver.ExtractBodySection(strings.NewReader(multipart), sec)
			if !bytes.Equal(got, exp) {
				t.Errorf("BODY[%v %s %v %v]<%v>:\n got %q\nwant %q", sec.Part, sec.Specifier, sec.HeaderFields, sec.HeaderFieldsNot, sec.Partial, got, exp)
			}
		}
		if got := m.FindBinarySection(&imap.FetchItemBinarySection{Part: []int{1, 1}}); string(got) != "The numbers are in: café revenue up." {
			t.Errorf("BINARY[1.1] %q", got)
		}
		for _, sec := range []*imap.FetchItemBinarySection{{Part: []int{1, 1}}, {Part: []int{2}}} {
			exp := imapserver.ExtractBinarySection(strings.NewReader(multipart), sec)
			if got := m.FindBinarySection(sec); !bytes.Equal(got, exp) {
				t.Errorf("BINARY[%v] %q, go-imap %q", sec.Part, got, exp)
			}
		}
		if got := m.FindBinarySection(&imap.FetchItemBinarySection{Part: []int{2}}); !bytes.Equal(got, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
			t.Errorf("BINARY[2] %v", got)
		}
		if n, ok := m.FindBinarySectionSize([]int{2}); !ok || n != 10 {
			t.Errorf("BINARY.SIZE[2] %d %v", n, ok)
		}
		// FETCH BODY[] (no PEEK) sets \Seen and says so.
		msgs = fetch(t, c, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: []int{1, 1}}}})
		if !hasFlag(msgs[0].Flags, imap.FlagSeen) {
			t.Errorf("FETCH BODY[1.1] did not report \\Seen: %v", msgs[0].Flags)
		}
		// RFC822.* and macros on the wire.
		r := e.raw(t, 0, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		r.cmd("b", "EXAMINE INBOX")
		out := strings.Join(r.cmd("c", "FETCH 1 (RFC822.SIZE RFC822.HEADER RFC822.TEXT)"), "\n")
		if !strings.Contains(out, fmt.Sprintf("RFC822.SIZE %d", len(multipart))) || !strings.Contains(out, "RFC822.HEADER {") || !strings.Contains(out, "RFC822.TEXT {") {
			t.Errorf("RFC822.*:\n%s", out)
		}
		for _, macro := range []string{"ALL", "FAST", "FULL"} {
			if got := r.cmd("d", "FETCH 1 "+macro); !strings.HasPrefix(got[len(got)-1], "d OK") {
				t.Errorf("FETCH %s: %q", macro, got)
			}
		}
		if got := r.cmd("e", "FETCH 1 (BODY[99])"); !strings.HasPrefix(got[len(got)-1], "e OK") {
			t.Errorf("a part that does not exist: %q", got)
		}
		if got := r.cmd("f", "FETCH 2 (FLAGS)"); !strings.HasPrefix(got[len(got)-1], "f BAD") {
			t.Errorf("sequence number beyond the mailbox: %q", got)
		}
		if got := r.cmd("g", "UID FETCH 99 (FLAGS)"); len(got) != 1 || !strings.HasPrefix(got[0], "g OK") {
			t.Errorf("UID that does not exist: %q", got)
		}
	})

	t.Run("examine is read-only", func(t *testing.T) {
		u := e.user(t, "readonly")
		e.deliver(t, 0, u, message("one", "body"))
		c := e.dialTLS(t, 1, u, nil)
		mustSelect(t, c, "INBOX", false)
		if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
			t.Fatal(err)
		}
		mustSelect(t, c, "INBOX", true)
		msgs := fetch(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}})
		if hasFlag(msgs[0].Flags, imap.FlagSeen) {
			t.Fatal("FETCH BODY[] under EXAMINE set \\Seen")
		}
		_, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect()
		expectCode(t, err, imap.StatusResponseTypeNo, "")
		_, err = c.Expunge().Collect()
		expectCode(t, err, imap.StatusResponseTypeNo, "")
		_, err = c.Move(imap.SeqSetNum(1), "Trash").Wait()
		expectCode(t, err, imap.StatusResponseTypeNo, "")
		if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
			t.Fatalf("COPY from a read-only mailbox: %v", err)
		}
		if err := c.UnselectAndExpunge().Wait(); err != nil {
			t.Fatalf("CLOSE: %v", err)
		}
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true}).Wait()
		if err != nil || *st.NumMessages != 1 || *st.NumUnseen != 1 {
			t.Fatalf("after EXAMINE + CLOSE: %+v %v", st, err)
		}
	})

	t.Run("store copy move expunge", func(t *testing.T) {
		u := e.user(t, "changes")
		for i := range 6 {
			e.deliver(t, i%3, u, message(fmt.Sprint("msg ", i), "text"))
		}
		c := e.dialTLS(t, 2, u, nil)
		mustSelect(t, c, "INBOX", false)
		flags := func(set imap.NumSet, op imap.StoreFlagsOp, silent bool, f ...imap.Flag) []*imapclient.FetchMessageBuffer {
			t.Helper()
			msgs, err := c.Store(set, &imap.StoreFlags{Op: op, Silent: silent, Flags: f}, nil).Collect()
			if err != nil {
				t.Fatalf("STORE: %v", err)
			}
			return msgs
		}
		if got := flags(imap.SeqSetNum(1, 2), imap.StoreFlagsAdd, false, imap.FlagFlagged, "$Label1"); len(got) != 2 ||
			!hasFlag(got[0].Flags, imap.FlagFlagged) || !hasFlag(got[1].Flags, "$Label1") {
			t.Fatalf("STORE +FLAGS: %+v", got)
		}
		if got := flags(imap.SeqSetNum(1), imap.StoreFlagsDel, false, imap.FlagFlagged); len(got) != 1 || hasFlag(got[0].Flags, imap.FlagFlagged) || !hasFlag(got[0].Flags, "$Label1") {
			t.Fatalf("STORE -FLAGS: %+v", got)
		}
		if got := flags(imap.SeqSetNum(2), imap.StoreFlagsSet, false, imap.FlagAnswered); len(got) != 1 || hasFlag(got[0].Flags, imap.FlagFlagged) || !hasFlag(got[0].Flags, imap.FlagAnswered) {
			t.Fatalf("STORE FLAGS: %+v", got)
		}
		if got := flags(imap.SeqSetNum(3), imap.StoreFlagsAdd, true, imap.FlagSeen); len(got) != 0 {
			t.Fatalf("STORE +FLAGS.SILENT answered with %d FETCH", len(got))
		}
		// UID STORE answers with UIDs.
		got, err := c.Store(imap.UIDSetNum(4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDraft}}, nil).Collect()
		if err != nil || len(got) != 1 || got[0].UID != 4 {
			t.Fatalf("UID STORE: %+v %v", got, err)
		}
		// COPY: by reference, with COPYUID; MOVE likewise, plus EXPUNGEs.
		cd, err := c.Copy(imap.SeqSetNum(1, 2), "Archive").Wait()
		if err != nil || cd.UIDValidity == 0 || cd.SourceUIDs.String() != "1:2" || cd.DestUIDs.String() != "1:2" {
			t.Fatalf("COPY: %+v %v", cd, err)
		}
		md, err := c.Move(imap.UIDSetNum(5, 6), "Trash").Wait()
		if err != nil || md.SourceUIDs.String() != "5:6" || md.DestUIDs.String() != "1:2" {
			t.Fatalf("MOVE: %+v %v", md, err)
		}
		if sd := c.Mailbox(); sd == nil || sd.NumMessages != 4 {
			t.Fatalf("after MOVE the client counts %+v", sd)
		}
		same := func(mailboxA string, uidA uint32, mailboxB string, uidB uint32) {
			t.Helper()
			s := e.c.Node(0).Store()
			var blobs []state.BlobID
			for _, p := range []struct {
				mb  string
				uid uint32
			}{{mailboxA, uidA}, {mailboxB, uidB}} {
				mb, err := s.Mailbox(ctxT(t), u, p.mb)
				if err != nil {
					t.Fatal(err)
				}
				m, err := s.LoadMessages(ctxT(t), u, mb.ID, []uint32{p.uid}, false)
				if err != nil || !m[0].Found {
					t.Fatalf("%s UID %d: %v", p.mb, p.uid, err)
				}
				blobs = append(blobs, m[0].Blob)
			}
			if blobs[0] != blobs[1] {
				t.Fatalf("%s/%d and %s/%d are different bodies", mailboxA, uidA, mailboxB, uidB)
			}
		}
		e.c.WaitApplied(e.c.Node(2).Consensus().AppliedIndex())
		same("INBOX", 1, "Archive", 1)
		_, err = c.Copy(imap.SeqSetNum(1), "Nowhere").Wait()
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeTryCreate)

		// EXPUNGE and UID EXPUNGE.
		flags(imap.SeqSetNum(1, 3, 4), imap.StoreFlagsAdd, true, imap.FlagDeleted)
		seqs, err := c.UIDExpunge(imap.UIDSetNum(3)).Collect()
		if err != nil || !slices.Equal(seqs, []uint32{3}) {
			t.Fatalf("UID EXPUNGE 3: %v %v", seqs, err)
		}
		seqs, err = c.Expunge().Collect()
		if err != nil || !slices.Equal(seqs, []uint32{1, 2}) {
			// UIDs 1 and 4 were seq 1 and 3; after "* 1 EXPUNGE" UID 4 is seq 2.
			t.Fatalf("EXPUNGE: %v %v", seqs, err)
		}
		left := fetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true})
		if len(left) != 1 || left[0].UID != 2 {
			t.Fatalf("left: %+v", left)
		}
		// CLOSE expunges silently.
		flags(imap.SeqSetNum(1), imap.StoreFlagsAdd, true, imap.FlagDeleted)
		if err := c.UnselectAndExpunge().Wait(); err != nil {
			t.Fatal(err)
		}
		if d := mustSelect(t, c, "INBOX", false); d.NumMessages != 0 {
			t.Fatalf("CLOSE left %d messages", d.NumMessages)
		}
	})

	t.Run("search", func(t *testing.T) {
		u := e.user(t, "search")
		c := e.dialTLS(t, 0, u, nil)
		appendMsg(t, c, "INBOX", []byte(multipart), &imap.AppendOptions{Time: time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)})
		appendMsg(t, c, "INBOX", message("plain note", "nothing to see"), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen, "$Work"}, Time: time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC)})
		appendMsg(t, c, "INBOX", message("big one", strings.Repeat("lorem ipsum ", 500)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged}, Time: time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)})
		mustSelect(t, c, "INBOX", false)
		day := func(s string) time.Time { d, _ := time.Parse("2006-01-02", s); return d }
		cases := []struct {
			name string
			c    imap.SearchCriteria
			want []uint32
		}{
			{"ALL", imap.SearchCriteria{}, []uint32{1, 2, 3}},
			{"TEXT in an encapsulated message", imap.SearchCriteria{Text: []string{"SECRET words"}}, []uint32{1}},
			{"BODY decoded quoted-printable", imap.SearchCriteria{Body: []string{"café revenue"}}, []uint32{1}},
			{"BODY not in headers", imap.SearchCriteria{Body: []string{"Quarterly"}}, nil},
			{"TEXT in headers", imap.SearchCriteria{Text: []string{"quarterly réport"}}, []uint32{1}},
			{"SUBJECT decoded", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "RÉPORT"}}}, []uint32{1}},
			{"FROM", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "jörg"}}}, []uint32{1}},
			{"HEADER present", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-Tracking", Value: ""}}}, []uint32{1}},
			{"SEEN", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{2}},
			{"UNSEEN", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, []uint32{1, 3}},
			{"KEYWORD", imap.SearchCriteria{Flag: []imap.Flag{"$work"}}, []uint32{2}},
			{"FLAGGED or KEYWORD", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagFlagged}}, {Flag: []imap.Flag{"$Work"}}}}}, []uint32{2, 3}},
			{"NOT FLAGGED", imap.SearchCriteria{Not: []imap.SearchCriteria{{Flag: []imap.Flag{imap.FlagFlagged}}}}, []uint32{1, 2}},
			{"LARGER", imap.SearchCriteria{Larger: 3000}, []uint32{3}},
			{"SMALLER", imap.SearchCriteria{Smaller: 500}, []uint32{2}},
			{"SINCE", imap.SearchCriteria{Since: day("2026-03-03")}, []uint32{1, 3}},
			{"BEFORE", imap.SearchCriteria{Before: day("2026-03-03")}, []uint32{2}},
			{"ON", imap.SearchCriteria{Since: day("2026-03-03"), Before: day("2026-03-04")}, []uint32{1}},
			{"SENTON", imap.SearchCriteria{SentSince: day("2026-03-03"), SentBefore: day("2026-03-04")}, []uint32{1}},
			{"SENTBEFORE", imap.SearchCriteria{SentBefore: day("2026-03-01")}, []uint32{2, 3}},
			{"UID set", imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(2, 3)}}, []uint32{2, 3}},
			{"sequence set", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}}}, []uint32{2, 3}},
			{"RECENT", imap.SearchCriteria{Flag: []imap.Flag{`\Recent`}}, []uint32{1, 2, 3}},
		}
		for _, tc := range cases {
			res, err := c.UIDSearch(&tc.c, nil).Wait()
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			var got []uint32
			for _, uid := range res.AllUIDs() {
				got = append(got, uint32(uid))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("UID SEARCH %s = %v, want %v", tc.name, got, tc.want)
			}
		}
		// ESEARCH and SEARCHRES.
		r := e.raw(t, 0, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		r.cmd("b", "SELECT INBOX")
		if got := r.cmd("c", "SEARCH RETURN (MIN MAX COUNT) ALL"); got[0] != `* ESEARCH (TAG "c") MIN 1 MAX 3 COUNT 3` {
			t.Errorf("ESEARCH: %q", got)
		}
		r.cmd("d", "SEARCH RETURN (SAVE) FLAGGED")
		if got := strings.Join(r.cmd("e", "FETCH $ (UID)"), "\n"); !strings.Contains(got, "* 3 FETCH (UID 3)") {
			t.Errorf("FETCH $: %s", got)
		}
		if got := r.cmd("f", "SEARCH NOT SEEN OR FLAGGED KEYWORD $Work"); got[0] != "* SEARCH 3" {
			t.Errorf("SEARCH NOT SEEN OR ...: %q", got)
		}
		if got := r.cmd("g", "SEARCH CHARSET KOI8-R ALL"); !strings.Contains(got[len(got)-1], "BADCHARSET") {
			t.Errorf("unknown charset: %q", got)
		}
	})

	t.Run("quota", func(t *testing.T) {
		u := e.user(t, "quota", 0, 3)
		c := e.dialTLS(t, 1, u, nil)
		for i := range 2 {
			appendMsg(t, c, "INBOX", message(fmt.Sprint("q", i), "x"), nil)
		}
		mustSelect(t, c, "INBOX", false)
		_, err := c.Copy(imap.SeqSetNum(1, 2), "Archive").Wait()
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota)
		appendMsg(t, c, "INBOX", message("q3", "x"), nil)
		_, err = tryAppend(c, "INBOX", message("q4", "x"), nil)
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota)
		// The connection stays usable.
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		big := e.user(t, "quota-bytes", 2000)
		b := e.dialTLS(t, 1, big, nil)
		_, err = tryAppend(b, "INBOX", bytes.Repeat([]byte("y"), 3000), nil)
		expectCode(t, err, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota)
	})

	t.Run("a session sees its own writes at once", func(t *testing.T) {
		u := e.user(t, "own")
		c := e.dialTLS(t, 2, u, nil)
		mustSelect(t, c, "INBOX", false)
		ad := appendMsg(t, c, "INBOX", message("mine", "x"), nil)
		if n := c.Mailbox().NumMessages; n != 1 {
			t.Fatalf("after APPEND into the selected mailbox the client counts %d", n)
		}
		cd, err := c.Copy(imap.UIDSetNum(ad.UID), "INBOX").Wait()
		if err != nil || c.Mailbox().NumMessages != 2 || cd.DestUIDs.String() != "2" {
			t.Fatalf("COPY into the same mailbox: %+v %v, %d messages", cd, err, c.Mailbox().NumMessages)
		}
		msgs := fetch(t, c, imap.UIDSetNum(2), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}})
		if len(msgs) != 1 || !hasFlag(msgs[0].Flags, imap.FlagSeen) {
			t.Fatalf("FETCH BODY[] of the copy: %+v", msgs)
		}
		if msgs = fetch(t, c, imap.UIDSetNum(2), &imap.FetchOptions{Flags: true}); !hasFlag(msgs[0].Flags, imap.FlagSeen) {
			t.Fatal("\\Seen set by FETCH is not seen by the next FETCH")
		}
		if err := c.Unselect().Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true}).Collect(); err == nil {
			t.Fatal("FETCH after UNSELECT succeeded")
		}
		// UTF8=ACCEPT: mailbox names travel as UTF-8.
		r := e.raw(t, 2, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		r.cmd("b", "ENABLE UTF8=ACCEPT")
		if got := r.cmd("c", `CREATE "Büro/Ärger"`); !strings.HasPrefix(got[len(got)-1], "c OK") {
			t.Fatalf("CREATE with UTF-8: %q", got)
		}
		if got := r.cmd("d", `LIST "" "B*"`); !slices.Contains(got, `* LIST (\HasChildren) "/" "Büro"`) || !slices.Contains(got, `* LIST (\HasNoChildren) "/" "Büro/Ärger"`) {
			t.Fatalf("LIST with UTF-8: %q", got)
		}
		// Without it, modified UTF-7.
		if l, err := c.List("", "B*", nil).Collect(); err != nil || len(l) != 2 || l[0].Mailbox != "Büro" {
			t.Fatalf("LIST through modified UTF-7: %+v %v", l, err)
		}
	})

	t.Run("keywords reach FLAGS", func(t *testing.T) {
		u := e.user(t, "keywords")
		e.deliver(t, 0, u, message("k", "k"))
		c := e.dialTLS(t, 0, u, nil)
		mustSelect(t, c, "INBOX", false)
		r := e.raw(t, 0, true)
		r.cmd("a", "LOGIN "+u+" \""+password+"\"")
		r.cmd("b", "SELECT INBOX")
		if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"$Important"}}, nil).Collect(); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(r.cmd("c", "NOOP"), "\n")
		if !strings.Contains(got, `* FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Important)`) || !strings.Contains(got, "* 1 FETCH (UID 1 FLAGS ($Important") {
			t.Errorf("another session's new keyword:\n%s", got)
		}
	})
}
