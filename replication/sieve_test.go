package replication_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

func newSieveStore(t *testing.T) (*replication.Store, *oneNode) {
	t.Helper()
	fsm, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	cons := &oneNode{fsm: fsm}
	s := replication.New(replication.Config{Consensus: cons, State: fsm})
	ctx := context.Background()
	if err := s.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a@example.org", "b@example.org"} {
		if _, err := s.AddUser(ctx, replication.NewUser{Address: a, Password: "a long enough password"}); err != nil {
			t.Fatal(err)
		}
	}
	cons.takeBarriers()
	return s, cons
}

func TestSieveStore(t *testing.T) {
	s, cons := newSieveStore(t)
	ctx := context.Background()
	const acct = "a@example.org"
	if err := s.PutSieveScript(ctx, acct, "main", `require "fileinto"; fileinto "x";`); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSieveScript(ctx, acct, "other", "keep;"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.ActiveSieveScript(ctx, acct); ok || err != nil {
		t.Fatalf("active before activation: %v %v", ok, err)
	}
	if err := s.SetActiveSieveScript(ctx, acct, "main"); err != nil {
		t.Fatal(err)
	}
	cons.takeBarriers()
	list, err := s.SieveScripts(ctx, acct)
	if err != nil || len(list) != 2 || list[0].Name != "main" || !list[0].Active || list[0].Content != "" || list[1].Active {
		t.Fatalf("list: %+v %v", list, err)
	}
	if cons.takeBarriers() == 0 {
		t.Error("SieveScripts passed no barrier")
	}
	one, err := s.SieveScript(ctx, acct, "other")
	if err != nil || one.Content != "keep;" || one.Size != 5 {
		t.Fatalf("get: %+v %v", one, err)
	}
	if cons.takeBarriers() == 0 {
		t.Error("SieveScript passed no barrier")
	}
	act, ok, err := s.ActiveSieveScript(ctx, acct)
	if err != nil || !ok || act.Name != "main" || !strings.Contains(act.Content, "fileinto") {
		t.Fatalf("active: %+v %v %v", act, ok, err)
	}
	if cons.takeBarriers() != 0 {
		t.Error("ActiveSieveScript passed a barrier: delivery's addressing barrier covers it")
	}
	for name, c := range map[string]struct {
		err  error
		want error
	}{
		"get missing":      {func() error { _, err := s.SieveScript(ctx, acct, "nope"); return err }(), replication.ErrNoSuchScript},
		"delete active":    {s.DeleteSieveScript(ctx, acct, "main"), replication.ErrScriptActive},
		"delete missing":   {s.DeleteSieveScript(ctx, acct, "nope"), replication.ErrNoSuchScript},
		"rename onto":      {s.RenameSieveScript(ctx, acct, "other", "main"), replication.ErrScriptExists},
		"rename missing":   {s.RenameSieveScript(ctx, acct, "nope", "x"), replication.ErrNoSuchScript},
		"rename bad name":  {s.RenameSieveScript(ctx, acct, "other", ""), replication.ErrInvalidScriptName},
		"put bad name":     {s.PutSieveScript(ctx, acct, "a\tb", "keep;"), replication.ErrInvalidScriptName},
		"put too large":    {s.PutSieveScript(ctx, acct, "big", strings.Repeat("#", state.MaxSieveScriptSize+1)), replication.ErrScriptLimit},
		"put not utf-8":    {s.PutSieveScript(ctx, acct, "x", "keep; # \xff"), replication.ErrInvalidArgument},
		"activate missing": {s.SetActiveSieveScript(ctx, acct, "nope"), replication.ErrNoSuchScript},
		"unknown account":  {s.PutSieveScript(ctx, "nobody@example.org", "x", "keep;"), replication.ErrNoSuchAccount},
		"list unknown":     {func() error { _, err := s.SieveScripts(ctx, "nobody@example.org"); return err }(), replication.ErrNoSuchAccount},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
		if replication.Temporary(c.err) {
			t.Errorf("%s: %v reads as temporary", name, c.err)
		}
	}
	for i := range state.MaxSieveScripts - 2 {
		if err := s.PutSieveScript(ctx, acct, "n"+string(rune('a'+i)), "keep;"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutSieveScript(ctx, acct, "one too many", "keep;"); !errors.Is(err, replication.ErrScriptLimit) {
		t.Fatalf("over the count: %v", err)
	}
	if err := s.RenameSieveScript(ctx, acct, "main", "renamed"); err != nil {
		t.Fatal(err)
	}
	if act, ok, _ := s.ActiveSieveScript(ctx, acct); !ok || act.Name != "renamed" {
		t.Fatalf("active after rename: %+v", act)
	}
	if err := s.SetActiveSieveScript(ctx, acct, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSieveScript(ctx, acct, "renamed"); err != nil {
		t.Fatal(err)
	}
	// Deleting the account drops its scripts.
	if err := s.DeleteUser(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(ctx, replication.NewUser{Address: acct, Password: "a long enough password"}); err != nil {
		t.Fatal(err)
	}
	if list, err := s.SieveScripts(ctx, acct); err != nil || len(list) != 0 {
		t.Fatalf("scripts of a re-made account: %+v %v", list, err)
	}
}

func TestVacationStore(t *testing.T) {
	s, cons := newSieveStore(t)
	ctx := context.Background()
	const acct = "a@example.org"
	due, err := s.VacationDue(ctx, acct, "Bob@example.net", "h", 7)
	if err != nil || !due {
		t.Fatalf("due before any reply: %v %v", due, err)
	}
	if cons.takeBarriers() == 0 {
		t.Error("VacationDue passed no barrier")
	}
	if err := s.RecordVacation(ctx, acct, "Bob@example.net", "h"); err != nil {
		t.Fatal(err)
	}
	if due, err := s.VacationDue(ctx, acct, "bob@example.net", "h", 7); err != nil || due {
		t.Fatalf("due right after a reply: %v %v", due, err)
	}
	if due, _ := s.VacationDue(ctx, acct, "bob@example.net", "other handle", 7); !due {
		t.Fatal("another handle is not due")
	}
	if due, _ := s.VacationDue(ctx, "b@example.org", "bob@example.net", "h", 7); !due {
		t.Fatal("another account is not due")
	}
	if _, err := s.VacationDue(ctx, "nobody@example.org", "bob@example.net", "h", 7); !errors.Is(err, replication.ErrNoSuchAccount) {
		t.Fatalf("unknown account: %v", err)
	}
	// Claims: of many at once exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ClaimVacation(ctx, acct, "carol@example.net", "h", 7)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d claims won, want 1", wins)
	}
	if due, _ := s.VacationDue(ctx, acct, "carol@example.net", "h", 1); due {
		t.Fatal("a claim did not record the reply")
	}
}
