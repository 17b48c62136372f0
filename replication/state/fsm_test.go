package state

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	since := uint64(7)
	cmds := []Command{
		&AddDomain{Time: 1, Name: "example.org"},
		&DeleteDomain{Time: 1, Name: "example.org"},
		&SetCatchAll{Time: 1, Domain: "example.org", Target: "x@example.org"},
		&AddAccount{Time: 1, Address: "a@example.org", PasswordHash: "$argon2id$...", QuotaBytes: 10, QuotaMessages: 2},
		&DeleteAccount{Time: 1, Address: "a@example.org"},
		&SetPassword{Time: 1, Address: "a@example.org", PasswordHash: "h"},
		&SetQuota{Time: 1, Address: "a@example.org", QuotaBytes: 5},
		&SetAccountDisabled{Time: 1, Address: "a@example.org", Disabled: true},
		&SetForwarding{Time: 1, Address: "a@example.org", Targets: []string{"b@x.net"}, KeepLocal: true},
		&SetAlias{Time: 1, Address: "al@example.org", Targets: []string{"a@example.org"}},
		&DeleteAlias{Time: 1, Address: "al@example.org"},
		&CreateMailbox{Time: 1, Account: "a@example.org", Name: "Work/Ärger", SpecialUse: UseArchive, Subscribe: true},
		&DeleteMailbox{Time: 1, Account: "a@example.org", Name: "Work"},
		&RenameMailbox{Time: 1, Account: "a@example.org", OldName: "A", NewName: "B"},
		&SetSubscribed{Time: 1, Account: "a@example.org", Name: "B", Subscribed: true},
		&Deliver{Time: 1, Blob: blobID(1), Size: 10, Summary: []byte{0, 1, 2, 0xff},
			InternalDate: time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("", 3600)),
			Targets:      []DeliverTarget{{Account: "a@example.org", Mailbox: "INBOX", Flags: Flags{System: FlagSeen, Keywords: []string{"$Junk"}}}}},
		&Append{Time: 1, Account: "a@example.org", MailboxID: 3, Blob: blobID(2), Size: 3, Flags: Flags{System: FlagDraft}},
		&Copy{Time: 1, SourceMailbox: 1, UIDs: UIDSet{{1, 5}, {9, 9}}, DestMailbox: 2},
		&Move{Time: 1, SourceMailbox: 1, UIDs: UIDSet{{1, 4294967295}}, DestMailbox: 2},
		&SetFlags{Time: 1, MailboxID: 1, UIDs: UIDSet{{2, 3}}, Op: FlagsAdd, Flags: Flags{System: FlagDeleted}, UnchangedSince: &since},
		&Expunge{Time: 1, MailboxID: 1, UIDs: UIDSet{{2, 2}}, OnlyDeleted: true},
		&ClaimRecent{Time: 1, MailboxID: 1},
		&PurgeBlobs{Time: 1, Before: 5, Limit: 10},
	}
	seen := map[byte]bool{}
	for _, c := range cmds {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if seen[data[0]] {
			t.Fatalf("%T reuses type byte 0x%02x", c, data[0])
		}
		seen[data[0]] = true
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if d, ok := c.(*Deliver); ok { // time.Time compares by instant and zone, not pointer
			g := got.(*Deliver)
			if !g.InternalDate.Equal(d.InternalDate) {
				t.Fatalf("internal date %v != %v", g.InternalDate, d.InternalDate)
			}
			g.InternalDate = d.InternalDate
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %T:\n got %+v\nwant %+v", c, got, c)
		}
	}
	if _, err := Decode([]byte{0x6E, '{', '}'}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := Decode(append([]byte{0x01}, `{"t":1,"name":"x","future_field":1}`...)); err == nil {
		t.Fatal("unknown field accepted: an old node would silently ignore a newer command's meaning")
	}
}

func TestUnknownCommandTypeStopsApplyAndRollsBack(t *testing.T) {
	h := newHarness(t)
	h.setup()
	before := dump(t, h.f)
	applied := h.f.AppliedIndex()
	h.takeEvents()

	good := h.entry(&AddDomain{Name: "other.org"})
	bad := consensus.Entry{Index: good.Index + 1, Term: 1, ID: proposalID(999), Data: []byte{0x6E, '{', '}'}}
	if _, err := h.f.Apply([]consensus.Entry{good, bad}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("Apply with unknown type: err = %v, want ErrUnknownCommand", err)
	}
	if h.f.AppliedIndex() != applied {
		t.Fatalf("applied index moved to %d", h.f.AppliedIndex())
	}
	if dump(t, h.f) != before {
		t.Fatal("a failed batch changed the state")
	}
	if ev := h.takeEvents(); len(ev) != 0 {
		t.Fatalf("events from a failed batch: %v", ev)
	}
}

func TestAddAccountCreatesDefaultMailboxes(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var boxes []Mailbox
	var subs []string
	h.view(func(tx *Tx) error {
		var err error
		if boxes, err = tx.Mailboxes("Alice@Example.org"); err != nil {
			return err
		}
		subs, err = tx.Subscriptions("alice@example.org")
		return err
	})
	got := map[string]SpecialUse{}
	for _, b := range boxes {
		got[b.Name] = b.SpecialUse
		if !b.Subscribed || b.UIDNext != 1 || b.UIDValidity == 0 || b.Account != "alice@example.org" {
			t.Errorf("mailbox %+v", b)
		}
	}
	want := map[string]SpecialUse{"INBOX": UseNone, "Drafts": UseDrafts, "Sent": UseSent, "Trash": UseTrash, "Junk": UseJunk, "Archive": UseArchive}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mailboxes %v, want %v", got, want)
	}
	if len(subs) != 6 {
		t.Fatalf("subscriptions %v", subs)
	}
	if r := h.do(&AddAccount{Address: "ALICE@example.org"}); !errors.Is(r.Err(), ErrAccountExists) {
		t.Fatalf("duplicate account: %v", r.Err())
	}
	if r := h.do(&AddAccount{Address: "carol@nowhere.org"}); !errors.Is(r.Err(), ErrNoSuchDomain) {
		t.Fatalf("account in unknown domain: %v", r.Err())
	}
	if r := h.do(&AddAccount{Address: "not-an-address"}); !errors.Is(r.Err(), ErrInvalidAddress) {
		t.Fatalf("bad address: %v", r.Err())
	}
}

func TestDomainsAndAliases(t *testing.T) {
	h := newHarness(t)
	h.setup()
	if r := h.do(&AddDomain{Name: "EXAMPLE.org"}); !errors.Is(r.Err(), ErrDomainExists) {
		t.Fatalf("duplicate domain: %v", r.Err())
	}
	must[Done](h, &SetAlias{Address: "team@example.org", Targets: []string{"alice@example.org", "Bob@Example.org"}})
	if r := h.do(&SetAlias{Address: "alice@example.org", Targets: []string{"bob@example.org"}}); !errors.Is(r.Err(), ErrAccountExists) {
		t.Fatalf("alias over account: %v", r.Err())
	}
	if r := h.do(&AddAccount{Address: "team@example.org"}); !errors.Is(r.Err(), ErrAliasExists) {
		t.Fatalf("account over alias: %v", r.Err())
	}
	// Upsert.
	must[Done](h, &SetAlias{Address: "team@example.org", Targets: []string{"bob@example.org"}})
	h.view(func(tx *Tx) error {
		a, err := tx.Alias("team@example.org")
		if err != nil || !slices.Equal(a.Targets, []string{"bob@example.org"}) {
			t.Errorf("alias %+v %v", a, err)
		}
		list, err := tx.Aliases("example.org")
		if err != nil || len(list) != 1 {
			t.Errorf("aliases %+v %v", list, err)
		}
		if all, err := tx.Aliases(""); err != nil || len(all) != 1 || all[0].Address != "team@example.org" {
			t.Errorf("all aliases %+v %v", all, err)
		}
		accts, err := tx.Accounts("example.org")
		if err != nil || len(accts) != 2 || accts[0].Address != "alice@example.org" {
			t.Errorf("accounts %+v %v", accts, err)
		}
		return nil
	})
	if r := h.do(&DeleteDomain{Name: "example.org"}); !errors.Is(r.Err(), ErrDomainNotEmpty) {
		t.Fatalf("delete non-empty domain: %v", r.Err())
	}
	must[Done](h, &DeleteAccount{Address: "alice@example.org"})
	must[Done](h, &DeleteAccount{Address: "bob@example.org"})
	if r := h.do(&DeleteDomain{Name: "example.org"}); !errors.Is(r.Err(), ErrDomainNotEmpty) {
		t.Fatalf("delete domain with alias: %v", r.Err())
	}
	must[Done](h, &DeleteAlias{Address: "team@example.org"})
	if r := h.do(&DeleteAlias{Address: "team@example.org"}); !errors.Is(r.Err(), ErrNoSuchAlias) {
		t.Fatalf("delete missing alias: %v", r.Err())
	}
	must[Done](h, &DeleteDomain{Name: "example.org"})
	h.view(func(tx *Tx) error {
		if _, err := tx.Domain("example.org"); !errors.Is(err, ErrNoSuchDomain) {
			t.Errorf("domain after delete: %v", err)
		}
		return nil
	})
}

func TestAccountSettings(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &SetPassword{Address: "alice@example.org", PasswordHash: "new"})
	must[Done](h, &SetQuota{Address: "alice@example.org", QuotaBytes: 100, QuotaMessages: 3})
	must[Done](h, &SetAccountDisabled{Address: "alice@example.org", Disabled: true})
	must[Done](h, &SetForwarding{Address: "alice@example.org", Targets: []string{"x@remote.net"}, KeepLocal: true})
	a := h.account("alice@example.org")
	if a.PasswordHash != "new" || a.QuotaBytes != 100 || a.QuotaMessages != 3 || !a.Disabled || !a.KeepLocal || !slices.Equal(a.Forward, []string{"x@remote.net"}) {
		t.Fatalf("account %+v", a)
	}
	if r := h.do(&SetForwarding{Address: "alice@example.org", Targets: []string{"alice@example.org"}}); !errors.Is(r.Err(), ErrInvalidArgument) {
		t.Fatalf("forward to self: %v", r.Err())
	}
	if r := h.do(&SetPassword{Address: "nobody@example.org"}); !errors.Is(r.Err(), ErrNoSuchAccount) {
		t.Fatalf("missing account: %v", r.Err())
	}
}

func TestUIDValidityDiffersAfterDeleteAndRecreate(t *testing.T) {
	h := newHarness(t)
	h.setup()
	seen := map[uint32]bool{}
	for i := range 5 {
		r := must[MailboxResult](h, &CreateMailbox{Account: "alice@example.org", Name: "Work"})
		if seen[r.UIDValidity] {
			t.Fatalf("round %d: UIDVALIDITY %d reissued", i, r.UIDValidity)
		}
		seen[r.UIDValidity] = true
		must[Done](h, &DeleteMailbox{Account: "alice@example.org", Name: "Work"})
	}
	// Even when the proposer's clock goes backwards.
	r := must[MailboxResult](h, &CreateMailbox{Time: t0 - int64(365*24*time.Hour), Account: "alice@example.org", Name: "Work"})
	if seen[r.UIDValidity] {
		t.Fatalf("UIDVALIDITY %d reissued after the clock went back", r.UIDValidity)
	}
}

func TestMailboxNames(t *testing.T) {
	valid := map[string]string{
		"inbox":         "INBOX",
		"Inbox/Sub":     "INBOX/Sub",
		"Work":          "Work",
		"work":          "work",
		"A/B/C":         "A/B/C",
		"Entwürfe":      "Entwürfe",
		"INBOXES":       "INBOXES",
		"Work/inbox":    "Work/inbox",
		"[Gmail]/Spam!": "[Gmail]/Spam!",
	}
	for in, want := range valid {
		got, err := NormalizeMailboxName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeMailboxName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	long := string(bytes.Repeat([]byte("a"), MaxMailboxComponentBytes+1))
	for _, in := range []string{"", "/", "/a", "a/", "a//b", "a*", "50%", "bad\x00", "tab\t", string([]byte{0xff}), long} {
		if _, err := NormalizeMailboxName(in); !errors.Is(err, ErrInvalidName) {
			t.Errorf("NormalizeMailboxName(%q) accepted", in)
		}
	}
	h := newHarness(t)
	h.setup()
	if r := h.do(&CreateMailbox{Account: "alice@example.org", Name: "a//b"}); !errors.Is(r.Err(), ErrInvalidName) {
		t.Fatalf("invalid name: %v", r.Err())
	}
	if r := h.do(&CreateMailbox{Account: "alice@example.org", Name: "inbox"}); !errors.Is(r.Err(), ErrMailboxExists) {
		t.Fatalf("create inbox: %v", r.Err())
	}
	if r := h.do(&CreateMailbox{Account: "alice@example.org", Name: "sent"}); r.Err() != nil {
		t.Fatalf("names other than INBOX are case-sensitive: %v", r.Err())
	}
	r := must[MailboxResult](h, &CreateMailbox{Account: "alice@example.org", Name: "P/Q/R", SpecialUse: UseFlagged, Subscribe: true})
	for _, n := range []string{"P", "P/Q"} {
		if mb := h.mailbox("alice@example.org", n); mb.Subscribed || mb.SpecialUse != UseNone {
			t.Errorf("parent %q: %+v", n, mb)
		}
	}
	if mb := h.mailbox("alice@example.org", "P/Q/R"); mb.ID != r.MailboxID || !mb.Subscribed || mb.SpecialUse != UseFlagged {
		t.Errorf("created %+v", mb)
	}
	if r := h.do(&CreateMailbox{Account: "alice@example.org", Name: "X", SpecialUse: `\Bogus`}); !errors.Is(r.Err(), ErrInvalidArgument) {
		t.Fatalf("bad special use: %v", r.Err())
	}
}

func TestDeliverTargets(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[AccountResult](h, &AddAccount{Address: "carol@example.org", QuotaBytes: 50})
	must[AccountResult](h, &AddAccount{Address: "dave@example.org"})
	must[Done](h, &SetAccountDisabled{Address: "dave@example.org", Disabled: true})
	must[MailboxResult](h, &CreateMailbox{Account: "bob@example.org", Name: "Lists"})

	date := time.Date(2024, 12, 24, 18, 30, 0, 0, time.FixedZone("", -5*3600))
	r := must[DeliverResult](h, &Deliver{Blob: blobID(1), Size: 100, Summary: []byte("summary-1"), InternalDate: date, Targets: []DeliverTarget{
		{Account: "Alice@Example.org", Flags: Flags{Keywords: []string{"$Label1"}}},
		{Account: "bob@example.org", Mailbox: "Lists"},
		{Account: "bob@example.org", Mailbox: "NoSuchFolder"},
		{Account: "nobody@example.org"},
		{Account: "dave@example.org"},
		{Account: "carol@example.org"},
	}})
	wantCodes := []error{nil, nil, nil, ErrNoSuchAccount, ErrAccountDisabled, ErrQuotaExceeded}
	for i, want := range wantCodes {
		if got := r.Targets[i].Err(); !errors.Is(got, want) || (want == nil && got != nil) {
			t.Errorf("target %d: err %v, want %v", i, got, want)
		}
	}
	inbox := h.mailbox("alice@example.org", "INBOX")
	if r.Targets[0].MailboxID != inbox.ID || r.Targets[0].UID != 1 || r.Targets[0].UIDValidity != inbox.UIDValidity {
		t.Fatalf("target 0 %+v, inbox %+v", r.Targets[0], inbox)
	}
	if r.Targets[1].MailboxID != h.mailbox("bob@example.org", "Lists").ID {
		t.Fatal("target 1 not in Lists")
	}
	if r.Targets[2].MailboxID != h.mailbox("bob@example.org", "INBOX").ID {
		t.Fatal("unknown mailbox did not fall back to INBOX")
	}
	b, err := h.blob(blobID(1))
	if err != nil || b.Refs != 3 || b.Size != 100 || string(b.Summary) != "summary-1" {
		t.Fatalf("blob %+v %v", b, err)
	}
	h.view(func(tx *Tx) error {
		m, err := tx.Message(inbox.ID, 1)
		if err != nil {
			return err
		}
		if !m.InternalDate.Equal(date) || m.InternalDate.Format(time.RFC3339) != "2024-12-24T18:30:00-05:00" {
			t.Errorf("internal date %v", m.InternalDate)
		}
		if !m.Flags.HasKeyword("$label1") || m.Size != 100 || m.Blob != blobID(1) {
			t.Errorf("message %+v", m)
		}
		return nil
	})
	if a := h.account("alice@example.org"); a.UsedBytes != 100 || a.UsedMessages != 1 {
		t.Fatalf("usage %+v", a)
	}
	// A second delivery of the same blob keeps the first summary.
	must[DeliverResult](h, &Deliver{Blob: blobID(1), Size: 100, Summary: []byte("other"), Targets: []DeliverTarget{{Account: "alice@example.org"}}})
	if b, _ := h.blob(blobID(1)); b.Refs != 4 || string(b.Summary) != "summary-1" {
		t.Fatalf("blob after second delivery %+v", b)
	}
}

func TestQuota(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &SetQuota{Address: "alice@example.org", QuotaBytes: 250, QuotaMessages: 10})
	inbox := h.mailbox("alice@example.org", "INBOX")
	archive := h.mailbox("alice@example.org", "Archive")
	app := func(n int, size int64) Result {
		return h.do(&Append{Account: "alice@example.org", MailboxID: inbox.ID, Blob: blobID(n), Size: size})
	}
	if r := app(1, 100); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if r := app(2, 100); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if r := app(3, 51); !errors.Is(r.Err(), ErrQuotaExceeded) {
		t.Fatalf("append over quota: %v", r.Err())
	}
	if r := app(3, 50); r.Err() != nil {
		t.Fatalf("append up to quota: %v", r.Err())
	}
	// Copy: all or nothing.
	if r := h.do(&Copy{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 3}}, DestMailbox: archive.ID}); !errors.Is(r.Err(), ErrQuotaExceeded) {
		t.Fatalf("copy over quota: %v", r.Err())
	}
	if got := h.uids(archive.ID); len(got) != 0 {
		t.Fatalf("failed copy stored %v", got)
	}
	// Move is not limited by quota (it frees as much as it takes).
	must[CopyResult](h, &Move{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 3}}, DestMailbox: archive.ID})
	if a := h.account("alice@example.org"); a.UsedBytes != 250 || a.UsedMessages != 3 {
		t.Fatalf("usage after move %+v", a)
	}
	// Deliver: per target.
	r := must[DeliverResult](h, &Deliver{Blob: blobID(9), Size: 1, Targets: []DeliverTarget{{Account: "alice@example.org"}, {Account: "bob@example.org"}}})
	if !errors.Is(r.Targets[0].Err(), ErrQuotaExceeded) || r.Targets[1].Err() != nil {
		t.Fatalf("deliver with one full account: %+v", r.Targets)
	}
	must[Done](h, &SetQuota{Address: "alice@example.org", QuotaMessages: 3})
	if r := app(4, 1); !errors.Is(r.Err(), ErrQuotaExceeded) {
		t.Fatalf("message quota: %v", r.Err())
	}
	must[Done](h, &SetQuota{Address: "alice@example.org"})
	if r := app(4, 1<<30); r.Err() != nil {
		t.Fatalf("unlimited: %v", r.Err())
	}
	if r := h.do(&Append{Account: "bob@example.org", MailboxID: inbox.ID, Blob: blobID(1), Size: 1}); !errors.Is(r.Err(), ErrNoSuchMailbox) {
		t.Fatalf("append to another account's mailbox: %v", r.Err())
	}
}

func TestCopyAndMoveUIDMaps(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	work := must[MailboxResult](h, &CreateMailbox{Account: "alice@example.org", Name: "Work"})
	for i := range 6 {
		h.deliver("alice@example.org", "", i, 10, Flags{System: FlagSeen, Keywords: []string{"k"}})
	}
	must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSetOf(2)})
	// Pre-existing message in Work so destination UIDs start at 2.
	h.deliver("alice@example.org", "Work", 10, 10, Flags{})

	r := must[CopyResult](h, &Copy{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 4}, {6, 99}}, DestMailbox: work.MailboxID})
	if r.UIDValidity != work.UIDValidity || r.Source.String() != "1,3:4,6" || r.Dest.String() != "2:5" {
		t.Fatalf("copy result %+v (src %s dst %s)", r, r.Source, r.Dest)
	}
	h.view(func(tx *Tx) error {
		m, err := tx.Message(work.MailboxID, 3)
		if err != nil || m.Blob != blobID(2) || m.Flags.System != FlagSeen || !m.Flags.HasKeyword("K") {
			t.Errorf("copied message %+v %v", m, err)
		}
		return nil
	})
	if b, _ := h.blob(blobID(2)); b.Refs != 2 {
		t.Fatalf("refs after copy %d", b.Refs)
	}
	if got := h.uids(inbox.ID); !equalU32(got, []uint32{1, 3, 4, 5, 6}) {
		t.Fatalf("copy changed the source: %v", got)
	}
	h.takeEvents()
	m := must[CopyResult](h, &Move{SourceMailbox: inbox.ID, UIDs: UIDSet{{4, 5}}, DestMailbox: work.MailboxID})
	if m.Source.String() != "4:5" || m.Dest.String() != "6:7" {
		t.Fatalf("move result src %s dst %s", m.Source, m.Dest)
	}
	if got := h.uids(inbox.ID); !equalU32(got, []uint32{1, 3, 6}) {
		t.Fatalf("source after move %v", got)
	}
	ev := h.takeEvents()
	if len(ev) != 3 {
		t.Fatalf("move events %#v", ev)
	}
	if e, ok := ev[2].(Expunged); !ok || !equalU32(e.UIDs, []uint32{4, 5}) || e.MailboxID != inbox.ID {
		t.Fatalf("move expunge event %#v", ev[2])
	}
	if r := h.do(&Move{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 1}}, DestMailbox: inbox.ID}); !errors.Is(r.Err(), ErrInvalidArgument) {
		t.Fatalf("move to itself: %v", r.Err())
	}
	r = must[CopyResult](h, &Copy{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 1}}, DestMailbox: inbox.ID})
	if r.Dest.String() != "7" {
		t.Fatalf("copy to itself %+v", r)
	}
	r = must[CopyResult](h, &Copy{SourceMailbox: inbox.ID, UIDs: UIDSet{{100, 200}}, DestMailbox: work.MailboxID})
	if len(r.Source) != 0 || len(r.Dest) != 0 {
		t.Fatalf("copy of missing UIDs %+v", r)
	}
	if r := h.do(&Copy{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 1}}, DestMailbox: 9999}); !errors.Is(r.Err(), ErrNoSuchMailbox) {
		t.Fatalf("copy to missing mailbox: %v", r.Err())
	}
	// Cross-account move carries usage along.
	bobInbox := h.mailbox("bob@example.org", "INBOX")
	must[CopyResult](h, &Move{SourceMailbox: inbox.ID, UIDs: UIDSet{{1, 1}}, DestMailbox: bobInbox.ID})
	if a := h.account("bob@example.org"); a.UsedMessages != 1 || a.UsedBytes != 10 {
		t.Fatalf("bob usage %+v", a)
	}
}

func TestSetFlags(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	for i := range 4 {
		h.deliver("alice@example.org", "", i, 10, Flags{})
	}
	h.takeEvents()
	r := must[FlagsResult](h, &SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{1, 3}}, Op: FlagsAdd, Flags: ParseFlags([]string{`\seen`, `\Flagged`, "$Work"})})
	if r.ModSeq != h.index || len(r.Changed) != 1 || r.Changed[0].UIDs.String() != "1:3" {
		t.Fatalf("add result %+v", r)
	}
	if got := r.Changed[0].Flags.Strings(); !slices.Equal(got, []string{`\Seen`, `\Flagged`, "$Work"}) {
		t.Fatalf("flags %v", got)
	}
	if ev := h.takeEvents(); len(ev) != 3 {
		t.Fatalf("events %v", ev)
	}
	mb := h.mailbox("alice@example.org", "INBOX")
	if mb.Unseen != 1 || mb.HighestModSeq != h.index {
		t.Fatalf("mailbox %+v", mb)
	}
	addIndex := h.index
	// Adding what is there changes nothing and keeps MODSEQ.
	r = must[FlagsResult](h, &SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{1, 1}}, Op: FlagsAdd, Flags: Flags{Keywords: []string{"$WORK"}}})
	if len(r.Changed) != 0 || r.ModSeq != 0 {
		t.Fatalf("no-op store %+v", r)
	}
	// Remove is case-insensitive on keywords.
	r = must[FlagsResult](h, &SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{2, 2}}, Op: FlagsRemove, Flags: Flags{System: FlagFlagged, Keywords: []string{"$work"}}})
	if len(r.Changed) != 1 || r.Changed[0].Flags.System != FlagSeen || len(r.Changed[0].Flags.Keywords) != 0 {
		t.Fatalf("remove %+v", r)
	}
	// UNCHANGEDSINCE: UID 2 changed after addIndex, UID 1 and 3 did not.
	since := addIndex
	r = must[FlagsResult](h, &SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{1, 9}}, Op: FlagsReplace, Flags: Flags{System: FlagDeleted}, UnchangedSince: &since})
	if r.Modified.String() != "2" || len(r.Changed) != 1 || r.Changed[0].UIDs.String() != "1,3:4" {
		t.Fatalf("unchanged-since %+v (modified %s)", r, r.Modified)
	}
	var deleted, unseen, flagged []uint32
	h.view(func(tx *Tx) error {
		deleted, _ = tx.Deleted(inbox.ID)
		unseen, _ = tx.Unseen(inbox.ID)
		flagged, _ = tx.UIDsWithFlag(inbox.ID, IndexFlagged)
		return tx.Flags(inbox.ID, 1, 4, func(uid uint32, f Flags, modseq uint64) error {
			if uid == 2 && modseq >= h.index || uid != 2 && modseq != h.index {
				t.Errorf("uid %d modseq %d (index %d)", uid, modseq, h.index)
			}
			return nil
		})
	})
	if !equalU32(deleted, []uint32{1, 3, 4}) || !equalU32(unseen, []uint32{1, 3, 4}) || len(flagged) != 0 {
		t.Fatalf("indexes deleted %v unseen %v flagged %v", deleted, unseen, flagged)
	}
	mb = h.mailbox("alice@example.org", "INBOX")
	if mb.Deleted != 3 || mb.Unseen != 3 || mb.Messages != 4 {
		t.Fatalf("counters %+v", mb)
	}
	if r := h.do(&SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{1, 1}}, Op: 9}); !errors.Is(r.Err(), ErrInvalidArgument) {
		t.Fatalf("bad op: %v", r.Err())
	}
}

func TestExpungeVariantsAndUIDsNeverReused(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	for i := range 8 {
		f := Flags{}
		if i%2 == 0 {
			f.System = FlagDeleted
		}
		h.deliver("alice@example.org", "", i, 10, f)
	}
	// UID EXPUNGE 1:4 removes only \Deleted among them: 1, 3.
	r := must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSet{{1, 4}}, OnlyDeleted: true})
	if r.UIDs.String() != "1,3" || r.ModSeq != h.index {
		t.Fatalf("uid expunge %+v", r)
	}
	// POP3: exactly the given set, \Deleted or not.
	r = must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSetOf(2, 6)})
	if r.UIDs.String() != "2,6" {
		t.Fatalf("pop3 expunge %+v", r)
	}
	// No set and not OnlyDeleted removes nothing.
	r = must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID})
	if len(r.UIDs) != 0 {
		t.Fatalf("empty expunge removed %s", r.UIDs)
	}
	// IMAP EXPUNGE: every \Deleted.
	r = must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, OnlyDeleted: true})
	if r.UIDs.String() != "5,7" {
		t.Fatalf("expunge %+v", r)
	}
	if got := h.uids(inbox.ID); !equalU32(got, []uint32{4, 8}) {
		t.Fatalf("left %v", got)
	}
	// Expunging the highest UID does not make it available again.
	must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSetOf(8)})
	if tr := h.deliver("alice@example.org", "", 20, 10, Flags{}); tr.UID != 9 {
		t.Fatalf("UID after expunging the top one: %d, want 9", tr.UID)
	}
	h.reopen()
	if tr := h.deliver("alice@example.org", "", 21, 10, Flags{}); tr.UID != 10 {
		t.Fatalf("UID after reopen: %d, want 10", tr.UID)
	}
	mb := h.mailbox("alice@example.org", "INBOX")
	if mb.Messages != 3 || mb.UIDNext != 11 || mb.Size != 30 || mb.Deleted != 0 {
		t.Fatalf("mailbox %+v", mb)
	}
	for i := range 8 {
		if b, err := h.blob(blobID(i)); err != nil || b.Refs != 0 && i != 3 || b.Refs == 0 && b.ZeroSince == 0 {
			if i == 3 && b.Refs == 1 {
				continue
			}
			t.Errorf("blob %d: %+v %v", i, b, err)
		}
	}
}

func TestRenameMailboxWithChildren(t *testing.T) {
	h := newHarness(t)
	h.setup()
	const acct = "alice@example.org"
	w := must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "Work", Subscribe: true})
	must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "Work/A/B", Subscribe: true})
	must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "Workshop"})
	h.deliver(acct, "Work/A", 1, 10, Flags{})
	wa := h.mailbox(acct, "Work/A")

	if r := h.do(&RenameMailbox{Account: acct, OldName: "Work", NewName: "Work/A/C"}); !errors.Is(r.Err(), ErrInvalidName) {
		t.Fatalf("rename into own child: %v", r.Err())
	}
	if r := h.do(&RenameMailbox{Account: acct, OldName: "Work", NewName: "Sent"}); !errors.Is(r.Err(), ErrMailboxExists) {
		t.Fatalf("rename onto existing: %v", r.Err())
	}
	if r := h.do(&RenameMailbox{Account: acct, OldName: "Nope", NewName: "X"}); !errors.Is(r.Err(), ErrNoSuchMailbox) {
		t.Fatalf("rename missing: %v", r.Err())
	}
	h.takeEvents()
	r := must[MailboxResult](h, &RenameMailbox{Account: acct, OldName: "Work", NewName: "Old/Jobs"})
	if r.MailboxID != w.MailboxID || r.UIDValidity != w.UIDValidity {
		t.Fatalf("rename result %+v, want id %d", r, w.MailboxID)
	}
	var names, subs []string
	h.view(func(tx *Tx) error {
		boxes, err := tx.Mailboxes(acct)
		for _, b := range boxes {
			names = append(names, b.Name)
		}
		subs, _ = tx.Subscriptions(acct)
		return err
	})
	want := []string{"Archive", "Drafts", "INBOX", "Junk", "Old", "Old/Jobs", "Old/Jobs/A", "Old/Jobs/A/B", "Sent", "Trash", "Workshop"}
	if !slices.Equal(names, want) {
		t.Fatalf("names %v\nwant  %v", names, want)
	}
	if !slices.Contains(subs, "Old/Jobs") || !slices.Contains(subs, "Old/Jobs/A/B") || slices.Contains(subs, "Work") {
		t.Fatalf("subscriptions %v", subs)
	}
	moved := h.mailbox(acct, "Old/Jobs/A")
	if moved.ID != wa.ID || moved.UIDValidity != wa.UIDValidity || moved.Messages != 1 {
		t.Fatalf("child after rename %+v, before %+v", moved, wa)
	}
	ev := h.takeEvents()
	if len(ev) != 4 { // Old created, three renamed
		t.Fatalf("events %#v", ev)
	}
}

func TestRenameInbox(t *testing.T) {
	h := newHarness(t)
	h.setup()
	const acct = "alice@example.org"
	must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "INBOX/Child"})
	for i := range 3 {
		h.deliver(acct, "", i, 10, Flags{System: FlagSeen})
	}
	must[ExpungeResult](h, &Expunge{MailboxID: h.mailbox(acct, "INBOX").ID, UIDs: UIDSetOf(1)})
	before := h.mailbox(acct, "INBOX")
	r := must[MailboxResult](h, &RenameMailbox{Account: acct, OldName: "inbox", NewName: "Old Mail"})
	after := h.mailbox(acct, "INBOX")
	if after.ID != before.ID || after.UIDValidity != before.UIDValidity || after.UIDNext != before.UIDNext || after.Messages != 0 {
		t.Fatalf("INBOX after rename %+v, before %+v", after, before)
	}
	old := h.mailbox(acct, "Old Mail")
	if old.ID != r.MailboxID || old.UIDValidity == before.UIDValidity || old.Messages != 2 || old.Unseen != 0 {
		t.Fatalf("new mailbox %+v", old)
	}
	if got := h.uids(old.ID); !equalU32(got, []uint32{1, 2}) {
		t.Fatalf("new UIDs %v", got)
	}
	h.mailbox(acct, "INBOX/Child") // still there
	if a := h.account(acct); a.UsedMessages != 2 || a.UsedBytes != 20 {
		t.Fatalf("usage %+v", a)
	}
	if b, _ := h.blob(blobID(2)); b.Refs != 1 {
		t.Fatalf("refs %+v", b)
	}
	if tr := h.deliver(acct, "", 9, 1, Flags{}); tr.UID != before.UIDNext {
		t.Fatalf("INBOX UID after rename %d, want %d", tr.UID, before.UIDNext)
	}
}

func TestDeleteMailboxAndAccountFreeReferences(t *testing.T) {
	h := newHarness(t)
	h.setup()
	const acct = "alice@example.org"
	must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "A/B"})
	h.deliver(acct, "A", 1, 10, Flags{})
	h.deliver(acct, "A/B", 2, 10, Flags{})
	if r := h.do(&DeleteMailbox{Account: acct, Name: "Inbox"}); !errors.Is(r.Err(), ErrCannotDeleteInbox) {
		t.Fatalf("delete INBOX: %v", r.Err())
	}
	if r := h.do(&DeleteMailbox{Account: acct, Name: "A"}); !errors.Is(r.Err(), ErrHasChildren) {
		t.Fatalf("delete parent: %v", r.Err())
	}
	if r := h.do(&DeleteMailbox{Account: acct, Name: "Z"}); !errors.Is(r.Err(), ErrNoSuchMailbox) {
		t.Fatalf("delete missing: %v", r.Err())
	}
	ab := h.mailbox(acct, "A/B")
	must[Done](h, &DeleteMailbox{Account: acct, Name: "A/B"})
	if b, _ := h.blob(blobID(2)); b.Refs != 0 || b.ZeroSince != h.now {
		t.Fatalf("blob after mailbox delete %+v (now %d)", b, h.now)
	}
	h.view(func(tx *Tx) error {
		if _, err := tx.MailboxByID(ab.ID); !errors.Is(err, ErrNoSuchMailbox) {
			t.Errorf("deleted mailbox by id: %v", err)
		}
		return nil
	})
	if a := h.account(acct); a.UsedMessages != 1 {
		t.Fatalf("usage %+v", a)
	}
	// A new mailbox never gets the deleted one's ID.
	if r := must[MailboxResult](h, &CreateMailbox{Account: acct, Name: "A/B"}); r.MailboxID <= ab.ID {
		t.Fatalf("mailbox ID %d reused (old %d)", r.MailboxID, ab.ID)
	}
	h.deliver("bob@example.org", "", 1, 10, Flags{})
	must[Done](h, &DeleteAccount{Address: acct})
	if b, _ := h.blob(blobID(1)); b.Refs != 1 {
		t.Fatalf("blob shared with bob: %+v", b)
	}
	h.view(func(tx *Tx) error {
		if _, err := tx.Mailboxes(acct); !errors.Is(err, ErrNoSuchAccount) {
			t.Errorf("mailboxes of deleted account: %v", err)
		}
		return nil
	})
	// The address can be reused by a new account, which starts empty.
	must[AccountResult](h, &AddAccount{Address: acct})
	if got := h.uids(h.mailbox(acct, "INBOX").ID); len(got) != 0 {
		t.Fatalf("recreated account has messages %v", got)
	}
}

func TestDedupRetriedProposal(t *testing.T) {
	h := newHarness(t)
	h.setup()
	first := h.entry(&Deliver{Blob: blobID(1), Size: 5, Targets: []DeliverTarget{{Account: "alice@example.org"}}})
	res1, err := h.f.Apply([]consensus.Entry{first})
	if err != nil {
		t.Fatal(err)
	}
	h.takeEvents()
	// The retry is a new log entry with the same proposal ID (and here a
	// later proposer time).
	retry := h.entry(&Deliver{Blob: blobID(1), Size: 5, Targets: []DeliverTarget{{Account: "alice@example.org"}}})
	retry.ID = first.ID
	res2, err := h.f.Apply([]consensus.Entry{retry})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res1[0], res2[0]) {
		t.Fatalf("retry result %s, first %s", res2[0], res1[0])
	}
	if got := h.uids(h.mailbox("alice@example.org", "INBOX").ID); len(got) != 1 {
		t.Fatalf("retried delivery stored %d copies", len(got))
	}
	if ev := h.takeEvents(); len(ev) != 0 {
		t.Fatalf("events for a duplicate: %v", ev)
	}
	if h.f.AppliedIndex() != retry.Index {
		t.Fatalf("applied %d, want %d", h.f.AppliedIndex(), retry.Index)
	}
	// A failed command is remembered too.
	bad := h.entry(&CreateMailbox{Account: "alice@example.org", Name: "Sent"})
	r1, _ := h.f.Apply([]consensus.Entry{bad})
	bad2 := h.entry(&CreateMailbox{Account: "alice@example.org", Name: "Sent"})
	bad2.ID = bad.ID
	r2, _ := h.f.Apply([]consensus.Entry{bad2})
	if !bytes.Equal(r1[0], r2[0]) {
		t.Fatal("failed result not remembered")
	}
	// Duplicates inside one batch.
	e1 := h.entry(&AddDomain{Name: "batch.org"})
	e2 := h.entry(&AddDomain{Name: "batch.org"})
	e2.ID = e1.ID
	rs := h.applyEntries([]consensus.Entry{e1, e2})
	if rs[0].Err() != nil || rs[1].Err() != nil {
		t.Fatalf("in-batch duplicate: %v %v", rs[0].Err(), rs[1].Err())
	}
}

func TestDedupWindowPrunes(t *testing.T) {
	h := newHarness(t)
	h.f.dedupWindow = 4
	e := h.entry(&AddDomain{Name: "a.org"})
	h.applyEntries([]consensus.Entry{e})
	for i := range 4 {
		h.apply(&AddDomain{Name: "x" + string(rune('a'+i)) + ".org"})
	}
	// Still inside the window (index 1, applied 5, window 4 keeps 2..5)? No:
	// 5-4 = 1, so index 1 is pruned now.
	retry := h.entry(&AddDomain{Name: "a.org"})
	retry.ID = e.ID
	rs := h.applyEntries([]consensus.Entry{retry})
	if !errors.Is(rs[0].Err(), ErrDomainExists) {
		t.Fatalf("after the window the ID should be forgotten and the command applied again: %v", rs[0].Err())
	}
	var n int
	h.f.View(func(tx *Tx) error {
		n = tx.tx.Bucket(bktDedup).Stats().KeyN
		return nil
	})
	if n > 4 {
		t.Fatalf("dedup holds %d IDs, window 4", n)
	}
}

func TestReplayAfterReopenIsSkipped(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var log []consensus.Entry
	for i := range 5 {
		log = append(log, h.entry(&Deliver{Blob: blobID(i), Size: 7, Targets: []DeliverTarget{{Account: "alice@example.org"}}}))
	}
	want, err := h.f.Apply(log)
	if err != nil {
		t.Fatal(err)
	}
	state := dump(t, h.f)
	h.reopen()
	if h.f.AppliedIndex() != log[4].Index {
		t.Fatalf("applied after reopen %d", h.f.AppliedIndex())
	}
	h.takeEvents()
	// Consensus replays the log from the last snapshot: everything again.
	got, err := h.f.Apply(log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("replayed result %d: %s, want %s", i, got[i], want[i])
		}
	}
	if dump(t, h.f) != state {
		t.Fatal("replay changed the state")
	}
	if ev := h.takeEvents(); len(ev) != 0 {
		t.Fatalf("replay emitted %d events", len(ev))
	}
	// A batch straddling the applied index applies only the new part.
	next := h.entry(&Deliver{Blob: blobID(9), Size: 7, Targets: []DeliverTarget{{Account: "alice@example.org"}}})
	h.applyEntries(append(log[3:], next))
	if got := h.uids(h.mailbox("alice@example.org", "INBOX").ID); len(got) != 6 {
		t.Fatalf("messages %v", got)
	}
}

func TestEventsAfterCommit(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	var sawCommitted bool
	h.f.opts.OnCommit = func(ev []Event) {
		// Runs after commit: a reader already sees the change.
		_ = h.f.View(func(tx *Tx) error {
			uids, _ := tx.UIDs(inbox.ID)
			sawCommitted = len(uids) == 1 && tx.AppliedIndex() == ev[0].EventIndex()
			return nil
		})
		h.onCommit(ev)
	}
	h.takeEvents()
	h.deliver("alice@example.org", "", 1, 10, Flags{})
	ev := h.takeEvents()
	if !sawCommitted {
		t.Fatal("OnCommit ran before the data was visible")
	}
	if len(ev) != 1 {
		t.Fatalf("events %#v", ev)
	}
	added, ok := ev[0].(MessageAdded)
	if !ok || added.UID != 1 || added.MailboxID != inbox.ID || added.ModSeq != h.index || added.Account != "alice@example.org" {
		t.Fatalf("event %#v", ev[0])
	}
	// A failing command emits nothing.
	h.do(&CreateMailbox{Account: "alice@example.org", Name: "Sent"})
	if ev := h.takeEvents(); len(ev) != 0 {
		t.Fatalf("events from a failed command %#v", ev)
	}
	// Events keep log order across a batch.
	h.apply(
		&CreateMailbox{Account: "alice@example.org", Name: "X"},
		&RenameMailbox{Account: "alice@example.org", OldName: "X", NewName: "Y"},
		&DeleteMailbox{Account: "alice@example.org", Name: "Y"},
	)
	ev = h.takeEvents()
	if len(ev) != 3 {
		t.Fatalf("events %#v", ev)
	}
	if _, ok := ev[0].(MailboxCreated); !ok {
		t.Fatalf("event 0 %#v", ev[0])
	}
	if r, ok := ev[1].(MailboxRenamed); !ok || r.OldName != "X" || r.NewName != "Y" {
		t.Fatalf("event 1 %#v", ev[1])
	}
	if _, ok := ev[2].(MailboxDeleted); !ok || ev[2].EventIndex() != h.index {
		t.Fatalf("event 2 %#v", ev[2])
	}
}

func TestClaimRecent(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	h.deliver("alice@example.org", "", 1, 1, Flags{})
	h.deliver("alice@example.org", "", 2, 1, Flags{})
	r := must[RecentResult](h, &ClaimRecent{MailboxID: inbox.ID})
	if r.Watermark != 1 || r.UIDNext != 3 {
		t.Fatalf("first claim %+v", r)
	}
	r = must[RecentResult](h, &ClaimRecent{MailboxID: inbox.ID})
	if r.Watermark != 3 || r.UIDNext != 3 {
		t.Fatalf("second claim %+v", r)
	}
	h.deliver("alice@example.org", "", 3, 1, Flags{})
	if r = must[RecentResult](h, &ClaimRecent{MailboxID: inbox.ID}); r.Watermark != 3 || r.UIDNext != 4 {
		t.Fatalf("third claim %+v", r)
	}
	if r := h.do(&ClaimRecent{MailboxID: 12345}); !errors.Is(r.Err(), ErrNoSuchMailbox) {
		t.Fatalf("claim on missing mailbox: %v", r.Err())
	}
}

func TestPurgeBlobs(t *testing.T) {
	h := newHarness(t)
	h.setup()
	inbox := h.mailbox("alice@example.org", "INBOX")
	for i := range 4 {
		h.deliver("alice@example.org", "", i, 10, Flags{})
	}
	must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSetOf(1, 2)})
	zeroAt := h.now
	must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, UIDs: UIDSetOf(3)})
	// Blob 0 and 1 reached zero at zeroAt, blob 2 a second later.
	r := must[PurgeResult](h, &PurgeBlobs{Before: zeroAt})
	if len(r.Blobs) != 0 {
		t.Fatalf("purged too early: %v", r.Blobs)
	}
	// Blob 1 is delivered again before the purge: it leaves the queue.
	h.deliver("bob@example.org", "", 1, 10, Flags{})
	r = must[PurgeResult](h, &PurgeBlobs{Before: zeroAt + int64(time.Hour), Limit: 1})
	if len(r.Blobs) != 1 || r.Blobs[0] != blobID(0) {
		t.Fatalf("first purge %v", r.Blobs)
	}
	r = must[PurgeResult](h, &PurgeBlobs{Before: zeroAt + int64(time.Hour)})
	if len(r.Blobs) != 1 || r.Blobs[0] != blobID(2) {
		t.Fatalf("second purge %v", r.Blobs)
	}
	for i, want := range []error{ErrNoSuchBlob, nil, ErrNoSuchBlob, nil} {
		if _, err := h.blob(blobID(i)); !errors.Is(err, want) || want == nil && err != nil {
			t.Errorf("blob %d: %v, want %v", i, err, want)
		}
	}
	var n int
	h.view(func(tx *Tx) error {
		return tx.ForEachBlob(func(b Blob) error {
			n++
			if b.Refs != 1 {
				t.Errorf("blob %+v", b)
			}
			return nil
		})
	})
	if n != 2 {
		t.Fatalf("%d blobs left", n)
	}
}

// A rename in the same batch (one bbolt transaction) as the subscribe must
// move the subscription exactly as it does across batches: the scenario
// the property test found (delete Trash, keeping its subscription; create
// A/B subscribed; rename A/B to Trash).
func TestRenameMovesSubscriptionMadeInSameBatch(t *testing.T) {
	const acct = "bob@example.org"
	cmds := func() []Command {
		return []Command{
			&CreateMailbox{Account: acct, Name: "A/B", SpecialUse: UseJunk, Subscribe: true},
			&RenameMailbox{Account: acct, OldName: "A/B", NewName: "Trash"},
			&SetSubscribed{Account: acct, Name: "Later", Subscribed: true},
			&CreateMailbox{Account: acct, Name: "Later"},
			&RenameMailbox{Account: acct, OldName: "Later", NewName: "Moved"},
		}
	}
	batched, single := newHarness(t), newHarness(t)
	for _, h := range []*harness{batched, single} {
		h.setup()
		must[Done](h, &DeleteMailbox{Account: acct, Name: "Trash"})
	}
	for i, r := range batched.apply(cmds()...) {
		if err := r.Err(); err != nil {
			t.Fatalf("batched command %d: %v", i, err)
		}
	}
	for _, c := range cmds() {
		if err := single.do(c).Err(); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}

	wantNames := []string{"A", "Archive", "Drafts", "INBOX", "Junk", "Moved", "Sent", "Trash"}
	wantSubs := []string{"Archive", "Drafts", "INBOX", "Junk", "Moved", "Sent", "Trash"}
	for name, h := range map[string]*harness{"one batch": batched, "one entry per batch": single} {
		var subs []string
		h.view(func(tx *Tx) error {
			var err error
			subs, err = tx.Subscriptions(acct)
			return err
		})
		if !slices.Equal(subs, wantSubs) {
			t.Errorf("%s: subscriptions %v, want %v", name, subs, wantSubs)
		}
		var names []string
		h.view(func(tx *Tx) error {
			boxes, err := tx.Mailboxes(acct)
			for _, b := range boxes {
				names = append(names, b.Name)
				if b.Name == "Trash" && (!b.Subscribed || b.SpecialUse != UseJunk) {
					t.Errorf("%s: renamed mailbox %+v", name, b)
				}
			}
			return err
		})
		if !slices.Equal(names, wantNames) {
			t.Errorf("%s: mailboxes %v, want %v", name, names, wantNames)
		}
	}
	if dump(t, batched.f) != dump(t, single.f) {
		t.Error("applying the same entries in one batch and one by one left different state")
	}
}

// The addressing scope moves with account, alias and domain changes only,
// so that a recipient decision need not wait for unrelated deliveries; after
// a reopen it starts at the applied index, which is always safe.
func TestAddressingScopeIndex(t *testing.T) {
	h := newHarness(t)
	h.setup()
	after := h.f.AppliedIndex()
	if got := h.f.ScopeIndex(ScopeAddressing); got != after {
		t.Fatalf("after adding accounts: scope index %d, want %d", got, after)
	}
	h.deliver("alice@example.org", "INBOX", 1, 100, Flags{})
	if got := h.f.ScopeIndex(ScopeAddressing); got != after {
		t.Fatalf("a delivery moved the addressing scope to %d", got)
	}
	if got := h.f.ScopeIndex("other"); got != h.f.AppliedIndex() {
		t.Fatalf("an unknown scope answers %d, want the applied index %d", got, h.f.AppliedIndex())
	}
	must[Done](h, &SetForwarding{Address: "alice@example.org", Targets: []string{"bob@example.org"}})
	if got := h.f.ScopeIndex(ScopeAddressing); got != h.f.AppliedIndex() {
		t.Fatalf("forwarding did not move the addressing scope: %d, applied %d", got, h.f.AppliedIndex())
	}
	// In one batch, the alias counts and the delivery after it does not.
	before := h.f.AppliedIndex()
	h.apply(&SetAlias{Address: "team@example.org", Targets: []string{"bob@example.org"}},
		&Deliver{Blob: blobID(3), Size: 10, Summary: []byte(`{}`), Targets: []DeliverTarget{{Account: "bob@example.org", Mailbox: "INBOX"}}})
	if got := h.f.ScopeIndex(ScopeAddressing); got != before+1 || h.f.AppliedIndex() != before+2 {
		t.Fatalf("after a batch of an alias and a delivery: scope index %d, applied %d; want %d and %d", got, h.f.AppliedIndex(), before+1, before+2)
	}
	h.deliver("bob@example.org", "INBOX", 2, 100, Flags{})
	h.reopen()
	if got := h.f.ScopeIndex(ScopeAddressing); got != h.f.AppliedIndex() {
		t.Fatalf("after a reopen: scope index %d, want the applied index %d", got, h.f.AppliedIndex())
	}
}
