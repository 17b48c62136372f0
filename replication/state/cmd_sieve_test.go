package state

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const alice = "alice@example.org"

func (h *harness) scripts(account string) []SieveScript {
	h.tb.Helper()
	var out []SieveScript
	h.view(func(tx *Tx) (err error) { out, err = tx.SieveScripts(account); return err })
	return out
}

func (h *harness) active(account string) (SieveScript, bool) {
	h.tb.Helper()
	var s SieveScript
	var ok bool
	h.view(func(tx *Tx) (err error) { s, ok, err = tx.ActiveSieveScript(account); return err })
	return s, ok
}

func TestSieveScripts(t *testing.T) {
	h := newHarness(t)
	h.setup()
	// A file without the buckets reads as no scripts.
	if got := h.scripts(alice); len(got) != 0 {
		t.Fatalf("scripts before any: %v", got)
	}
	if _, ok := h.active(alice); ok {
		t.Fatal("an active script before any")
	}
	must[Done](h, &PutSieveScript{Account: "Alice@Example.org", Name: "main", Content: "keep;"})
	must[Done](h, &PutSieveScript{Account: alice, Name: "spam", Content: `discard;`})
	must[Done](h, &PutSieveScript{Account: "bob@example.org", Name: "main", Content: "stop;"})
	if got := h.scripts(alice); len(got) != 2 || got[0] != (SieveScript{Name: "main", Size: 5}) || got[1].Name != "spam" {
		t.Fatalf("list: %+v", got)
	}
	// Activate, replace (stays active), and read it back.
	must[Done](h, &SetActiveSieveScript{Account: alice, Name: "main"})
	must[Done](h, &PutSieveScript{Account: alice, Name: "main", Content: "keep; stop;"})
	if s, ok := h.active(alice); !ok || s.Name != "main" || s.Content != "keep; stop;" || !s.Active || s.Size != 11 {
		t.Fatalf("active: %+v %v", s, ok)
	}
	if s, ok := h.active("bob@example.org"); ok {
		t.Fatalf("bob has an active script: %+v", s)
	}
	// Deleting the active script is refused; another one goes.
	for name, c := range map[string]struct {
		cmd  Command
		want error
	}{
		"delete active":       {&DeleteSieveScript{Account: alice, Name: "main"}, ErrScriptActive},
		"delete missing":      {&DeleteSieveScript{Account: alice, Name: "nope"}, ErrNoSuchScript},
		"rename missing":      {&RenameSieveScript{Account: alice, OldName: "nope", NewName: "x"}, ErrNoSuchScript},
		"rename onto another": {&RenameSieveScript{Account: alice, OldName: "spam", NewName: "main"}, ErrScriptExists},
		"rename bad name":     {&RenameSieveScript{Account: alice, OldName: "spam", NewName: "a\nb"}, ErrInvalidScriptName},
		"activate missing":    {&SetActiveSieveScript{Account: alice, Name: "nope"}, ErrNoSuchScript},
		"put bad name":        {&PutSieveScript{Account: alice, Name: "", Content: "keep;"}, ErrInvalidScriptName},
		"put control char":    {&PutSieveScript{Account: alice, Name: "a\x00", Content: "keep;"}, ErrInvalidScriptName},
		"put long name":       {&PutSieveScript{Account: alice, Name: strings.Repeat("é", MaxSieveNameLen+1), Content: "keep;"}, ErrInvalidScriptName},
		"put too large":       {&PutSieveScript{Account: alice, Name: "x", Content: strings.Repeat("#", MaxSieveScriptSize+1)}, ErrScriptLimit},
		"unknown account":     {&PutSieveScript{Account: "nobody@example.org", Name: "x", Content: "keep;"}, ErrNoSuchAccount},
	} {
		if err := h.do(c.cmd).Err(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// Names are 1..128 characters, counted in characters, not bytes.
	must[Done](h, &PutSieveScript{Account: alice, Name: strings.Repeat("é", MaxSieveNameLen), Content: "keep;"})
	must[Done](h, &DeleteSieveScript{Account: alice, Name: strings.Repeat("é", MaxSieveNameLen)})
	// Rename the active script: it stays active under the new name.
	must[Done](h, &RenameSieveScript{Account: alice, OldName: "main", NewName: "Main 2"})
	must[Done](h, &RenameSieveScript{Account: alice, OldName: "Main 2", NewName: "Main 2"})
	if s, ok := h.active(alice); !ok || s.Name != "Main 2" || s.Content != "keep; stop;" {
		t.Fatalf("active after rename: %+v %v", s, ok)
	}
	var got SieveScript
	h.view(func(tx *Tx) (err error) { got, err = tx.SieveScript(alice, "main"); return nil })
	if got.Name != "" {
		t.Fatalf("old name still there: %+v", got)
	}
	// Deactivate; now it can be deleted.
	must[Done](h, &SetActiveSieveScript{Account: alice})
	if _, ok := h.active(alice); ok {
		t.Fatal("still active after deactivating")
	}
	must[Done](h, &DeleteSieveScript{Account: alice, Name: "Main 2"})
	if got := h.scripts(alice); len(got) != 1 || got[0].Name != "spam" || got[0].Active {
		t.Fatalf("after delete: %+v", got)
	}
}

func TestSieveLimits(t *testing.T) {
	h := newHarness(t)
	h.setup()
	for i := range MaxSieveScripts {
		must[Done](h, &PutSieveScript{Account: alice, Name: string(rune('a' + i)), Content: "keep;"})
	}
	if err := h.do(&PutSieveScript{Account: alice, Name: "one more", Content: "keep;"}).Err(); !errors.Is(err, ErrScriptLimit) {
		t.Fatalf("script %d: %v", MaxSieveScripts+1, err)
	}
	// Replacing one at the limit is fine.
	must[Done](h, &PutSieveScript{Account: alice, Name: "a", Content: "discard;"})
	// The bytes in all: four large scripts fit, the fifth does not.
	big := strings.Repeat("#", MaxSieveScriptSize)
	for i := range MaxSieveBytes/MaxSieveScriptSize - 1 {
		must[Done](h, &PutSieveScript{Account: alice, Name: string(rune('a' + i)), Content: big})
	}
	if err := h.do(&PutSieveScript{Account: alice, Name: "j", Content: big}).Err(); !errors.Is(err, ErrScriptLimit) {
		t.Fatalf("over the byte limit: %v", err)
	}
	// Another account is not affected.
	must[Done](h, &PutSieveScript{Account: "bob@example.org", Name: "j", Content: big})
}

func TestVacationRecords(t *testing.T) {
	h := newHarness(t)
	h.setup()
	day := int64(24 * time.Hour)
	at := func(cmd *VacationSent) (int64, bool) {
		var ts int64
		var ok bool
		h.view(func(tx *Tx) (err error) { ts, ok, err = tx.VacationSentAt(alice, cmd.Sender, cmd.Handle); return err })
		return ts, ok
	}
	first := &VacationSent{Time: t0, Account: alice, Sender: "Bob@Example.net", Handle: "h", Days: 7}
	must[Done](h, first)
	if ts, ok := at(first); !ok || ts != t0 {
		t.Fatalf("record: %d %v", ts, ok)
	}
	// A claim within the days is refused and writes nothing; after them
	// it succeeds; another handle is independent.
	if err := h.do(&VacationSent{Time: t0 + 6*day, Account: alice, Sender: "bob@example.net", Handle: "h", Days: 7}).Err(); !errors.Is(err, ErrVacationNotDue) {
		t.Fatalf("claim within days: %v", err)
	}
	if ts, _ := at(first); ts != t0 {
		t.Fatal("a refused claim wrote")
	}
	must[Done](h, &VacationSent{Time: t0 + 6*day, Account: alice, Sender: "bob@example.net", Handle: "other", Days: 7})
	must[Done](h, &VacationSent{Time: t0 + 8*day, Account: alice, Sender: "bob@example.net", Handle: "h", Days: 7})
	if ts, _ := at(first); ts != t0+8*day {
		t.Fatalf("after the days: %d", ts)
	}
	// Days 0 records unconditionally.
	must[Done](h, &VacationSent{Time: t0 + 8*day + 1, Account: alice, Sender: "bob@example.net", Handle: "h"})
	for name, c := range map[string]*VacationSent{
		"no sender":   {Account: alice, Handle: "h"},
		"no handle":   {Account: alice, Sender: "x@y"},
		"nul":         {Account: alice, Sender: "x\x00@y", Handle: "h"},
		"long handle": {Account: alice, Sender: "x@y", Handle: strings.Repeat("h", 600)},
	} {
		if err := h.do(c).Err(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A later record prunes the expired ones.
	old := &VacationSent{Time: t0 + 9*day, Account: alice, Sender: "carol@example.net", Handle: "h"}
	must[Done](h, old)
	must[Done](h, &VacationSent{Time: old.Time + int64(VacationRetention) + 1, Account: alice, Sender: "dave@example.net", Handle: "h"})
	if _, ok := at(old); ok {
		t.Fatal("an expired record was not pruned")
	}
	if _, ok := at(first); ok {
		t.Fatal("bob's expired record was not pruned")
	}
}

func TestVacationRecordLimit(t *testing.T) {
	h := newHarness(t)
	h.setup()
	var cmds []Command
	for i := range MaxVacationRecords + 1 {
		cmds = append(cmds, &VacationSent{Time: t0 + int64(i), Account: alice, Sender: "s" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "@example.net", Handle: "h"})
	}
	for _, r := range h.apply(cmds...) {
		if r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	n := 0
	h.f.mu.RLock()
	_ = h.f.db.View(func(tx *boltTx) error {
		c := tx.Bucket(bktVacation).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	h.f.mu.RUnlock()
	if n != MaxVacationRecords {
		t.Fatalf("%d records kept, want %d", n, MaxVacationRecords)
	}
	var ok bool
	h.view(func(tx *Tx) (err error) { _, ok, err = tx.VacationSentAt(alice, "sa@example.net", "h"); return err })
	if ok {
		t.Fatal("the oldest record was kept at the limit")
	}
}

func TestDeleteAccountForgetsSieve(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &PutSieveScript{Account: alice, Name: "main", Content: "keep;"})
	must[Done](h, &SetActiveSieveScript{Account: alice, Name: "main"})
	must[Done](h, &VacationSent{Account: alice, Sender: "bob@example.net", Handle: "h"})
	must[Done](h, &PutSieveScript{Account: "bob@example.org", Name: "main", Content: "keep;"})
	must[Done](h, &DeleteAccount{Address: alice})
	must[AccountResult](h, &AddAccount{Address: alice, PasswordHash: "h"})
	if got := h.scripts(alice); len(got) != 0 {
		t.Fatalf("scripts survived their account: %v", got)
	}
	if _, ok := h.active(alice); ok {
		t.Fatal("active script survived its account")
	}
	var ok bool
	h.view(func(tx *Tx) (err error) { _, ok, err = tx.VacationSentAt(alice, "bob@example.net", "h"); return err })
	if ok {
		t.Fatal("vacation record survived its account")
	}
	if got := h.scripts("bob@example.org"); len(got) != 1 {
		t.Fatalf("bob's scripts: %v", got)
	}
	dumped := dump(t, h.f)
	for _, b := range []string{"[sieve_scripts]", "[sieve_active]", "[sieve_vacation]"} {
		if !strings.Contains(dumped, b) {
			t.Fatalf("bucket %s missing", b)
		}
	}
	// Nothing of alice's old ID is left in the sieve buckets: only bob's
	// script remains.
	entries, in := 0, false
	for _, line := range strings.Split(dumped, "\n") {
		if strings.HasPrefix(line, "[") {
			in = strings.HasPrefix(line, "[sieve_")
		} else if in && line != "" {
			entries++
		}
	}
	if entries != 1 {
		t.Fatalf("sieve buckets hold %d entries, want bob's script only:\n%s", entries, dumped)
	}
}

func TestSnapshotCarriesSieve(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &PutSieveScript{Account: alice, Name: "main", Content: "keep;"})
	must[Done](h, &SetActiveSieveScript{Account: alice, Name: "main"})
	must[Done](h, &VacationSent{Account: alice, Sender: "bob@example.net", Handle: "h"})
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	other := newHarness(t)
	if err := other.f.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if s, ok := other.active(alice); !ok || s.Content != "keep;" {
		t.Fatalf("restored active script: %+v %v", s, ok)
	}
	var ok bool
	other.view(func(tx *Tx) (err error) { _, ok, err = tx.VacationSentAt(alice, "bob@example.net", "h"); return err })
	if !ok {
		t.Fatal("restored state lost the vacation record")
	}
	if dump(t, other.f) != dump(t, h.f) {
		t.Fatal("restored state differs")
	}
}

// The script kinds move the addressing scope (delivery reads the active
// script after that barrier); VacationSent does not.
func TestSieveScopes(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &PutSieveScript{Account: alice, Name: "main", Content: "keep;"})
	if got := h.f.ScopeIndex(ScopeAddressing); got != h.index {
		t.Fatalf("addressing scope %d after a script put at %d", got, h.index)
	}
	put := h.index
	must[Done](h, &VacationSent{Account: alice, Sender: "bob@example.net", Handle: "h"})
	if got := h.f.ScopeIndex(ScopeAddressing); got != put {
		t.Fatalf("VacationSent moved the addressing scope to %d", got)
	}
	must[Done](h, &SetActiveSieveScript{Account: alice, Name: "main"})
	if got := h.f.ScopeIndex(ScopeAddressing); got != h.index {
		t.Fatal("SetActiveSieveScript did not move the addressing scope")
	}
}

type boltTx = bolt.Tx
