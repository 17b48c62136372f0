package state

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/consensus"
)

// The type bytes are part of every log and snapshot written so far: the
// table must keep them.
func TestKindTableKeepsTheTypeBytesOfExistingLogs(t *testing.T) {
	want := map[string]byte{
		"AddDomain": 0x01, "DeleteDomain": 0x02, "SetCatchAll": 0x03,
		"AddAccount": 0x10, "DeleteAccount": 0x11, "SetPassword": 0x12, "SetQuota": 0x13,
		"SetAccountDisabled": 0x14, "SetForwarding": 0x15, "SetAlias": 0x20, "DeleteAlias": 0x21,
		"CreateMailbox": 0x30, "DeleteMailbox": 0x31, "RenameMailbox": 0x32, "SetSubscribed": 0x33,
		"Deliver": 0x40, "Append": 0x41, "Copy": 0x42, "Move": 0x43, "SetFlags": 0x44,
		"Expunge": 0x45, "ClaimRecent": 0x46, "PurgeBlobs": 0x50,
		"SetDKIMKeys": 0x70, "TrainSpam": 0x71, "GreylistSeen": 0x77,
		"PutSieveScript": 0x72, "DeleteSieveScript": 0x73, "RenameSieveScript": 0x74,
		"SetActiveSieveScript": 0x75, "VacationSent": 0x76,
		"QueueTick": 0x60, "QueueClaim": 0x61, "QueueRenew": 0x62, "QueueReport": 0x63, "QueueAdmin": 0x64,
	}
	got := map[string]byte{}
	for _, k := range commandKinds.byType {
		if k == nil {
			continue
		}
		got[k.name] = k.typ
		if k.goType.Name() != k.name {
			t.Errorf("kind %s has payload type %s", k.name, k.goType.Name())
		}
		if k.advisory {
			t.Errorf("kind %s is advisory: no kind of this version may be skipped by older nodes", k.name)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("table has %d kinds, want %d: %v", len(got), len(want), got)
	}
	for name, b := range want {
		if got[name] != b {
			t.Errorf("%s: type byte 0x%02x, want 0x%02x", name, got[name], b)
		}
	}
	// Only accounts, domains, aliases and sieve scripts (which decide
	// where a recipient's mail goes) change addressing.
	for _, k := range commandKinds.byType {
		if k != nil && k.addressing != (k.typ < 0x30 || k.typ >= 0x72 && k.typ <= 0x75) {
			t.Errorf("%s: addressing = %v", k.name, k.addressing)
		}
	}
}

// An entry written by the previous version (its bytes spelled out here)
// still applies.
func TestEntriesOfThePreviousVersionStillApply(t *testing.T) {
	h := newHarness(t)
	entries := []consensus.Entry{
		{Index: 1, Term: 1, Data: []byte(`` + "\x01" + `{"t":1700000000000000000,"name":"example.org"}`)},
		{Index: 2, Term: 1, Data: []byte("\x10" + `{"t":1700000000000000001,"address":"a@example.org","password_hash":"h"}`)},
		{Index: 3, Term: 1, Data: []byte("\x30" + `{"t":1700000000000000002,"account":"a@example.org","name":"Work/Old","subscribe":true}`)},
	}
	res := h.applyEntries(entries)
	for i, r := range res {
		if r.Err() != nil {
			t.Fatalf("entry %d: %v", i+1, r.Err())
		}
	}
	if mr, ok := res[2].(MailboxResult); !ok || mr.MailboxID == 0 {
		t.Fatalf("CreateMailbox result %#v", res[2])
	}
	if mb := h.mailbox("a@example.org", "Work/Old"); !mb.Subscribed {
		t.Fatalf("mailbox %+v", mb)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A newer version's advisory command (type byte with ignoreIfUnknown) is
// skipped: the batch around it applies, the applied index passes it, the
// state is as if it were not there, and the node says so once.
func TestUnknownAdvisoryCommandIsSkipped(t *testing.T) {
	var logs lockedBuffer
	dir := t.TempDir()
	h := newHarnessIn(t, dir)
	h.f.Close()
	f, err := Open(h.path, Options{OnCommit: h.onCommit, NoSync: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h.f = f
	h.setup()
	h.takeEvents()
	before := dump(t, h.f)

	unknown := func() consensus.Entry {
		h.index++
		return consensus.Entry{Index: h.index, Term: 1, ID: proposalID(h.index), Data: []byte{0x7e | ignoreIfUnknown, '{', '"', 'x', '"', ':', '1', '}'}}
	}
	// Alone in a batch: the applied index passes it and nothing else
	// changes.
	first := unknown()
	raw, err := h.f.Apply([]consensus.Entry{first})
	if err != nil {
		t.Fatalf("Apply with an unknown advisory command: %v", err)
	}
	if raw[0] != nil {
		t.Fatalf("skipped entry has result %q", raw[0])
	}
	if h.f.AppliedIndex() != first.Index {
		t.Fatalf("applied index %d, want %d", h.f.AppliedIndex(), first.Index)
	}
	if after := dump(t, h.f); withoutApplied(after) != withoutApplied(before) {
		t.Fatalf("skipping changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// Among other commands: they apply.
	good := h.entry(&AddDomain{Name: "other.org"})
	second := unknown()
	raw, err = h.f.Apply([]consensus.Entry{good, second})
	if err != nil {
		t.Fatalf("Apply with an unknown advisory command: %v", err)
	}
	if r, err := DecodeResult(raw[0]); err != nil || r.Err() != nil {
		t.Fatalf("the command before it: %v, %v", r, err)
	}
	if raw[1] != nil || h.f.AppliedIndex() != second.Index {
		t.Fatalf("second skipped entry: result %q, applied index %d", raw[1], h.f.AppliedIndex())
	}
	h.view(func(tx *Tx) error {
		_, err := tx.Domain("other.org")
		return err
	})
	if n := strings.Count(logs.String(), "skipping a command kind"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
	}
}

// withoutApplied drops the applied index from a dump.
func withoutApplied(d string) string {
	var keep []string
	for _, line := range strings.Split(d, "\n") {
		if !strings.HasPrefix(line, fmt.Sprintf("%x=", metaApplied)) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// The same unknown kind without the flag stops the state machine: the whole
// batch is refused and nothing is written.
func TestUnknownUnflaggedCommandStopsTheStateMachine(t *testing.T) {
	h := newHarness(t)
	h.setup()
	before := dump(t, h.f)
	applied := h.f.AppliedIndex()
	good := h.entry(&AddDomain{Name: "other.org"})
	bad := consensus.Entry{Index: good.Index + 1, Term: 1, ID: proposalID(good.Index + 1), Data: []byte{0x7e, '{', '}'}}
	_, err := h.f.Apply([]consensus.Entry{good, bad})
	if !errors.Is(err, ErrUnknownCommand) || errors.Is(err, errSkippable) {
		t.Fatalf("Apply: err = %v, want ErrUnknownCommand", err)
	}
	if h.f.AppliedIndex() != applied || dump(t, h.f) != before {
		t.Fatal("a refused batch changed the state")
	}
}

// A known kind decodes whether or not its byte carries the flag: the flag
// only says what an older node may do.
func TestFlagOnAKnownKindIsAccepted(t *testing.T) {
	data, err := Encode(AddDomain{Time: 1, Name: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	data[0] |= ignoreIfUnknown
	cmd, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := cmd.(*AddDomain); !ok || c.Name != "example.org" {
		t.Fatalf("decoded %#v", cmd)
	}
}

// BenchmarkEncodeDecode measures the table lookups on the path of every
// proposal (Encode on the proposer, decode in Apply).
func BenchmarkEncodeDecode(b *testing.B) {
	cmd := &SetFlags{Time: 1, MailboxID: 7, UIDs: UIDSet{{1, 5}}, Op: FlagsAdd, Flags: Flags{System: FlagSeen}}
	for b.Loop() {
		data, err := Encode(cmd)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
