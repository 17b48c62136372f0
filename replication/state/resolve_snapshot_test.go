package state

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	h := newHarness(t)
	h.setup()
	const dom = "example.org"
	must[AccountResult](h, &AddAccount{Address: "carol@example.org"})
	must[AccountResult](h, &AddAccount{Address: "fwd@example.org"})
	must[AccountResult](h, &AddAccount{Address: "keep@example.org"})
	must[AccountResult](h, &AddAccount{Address: "loop1@example.org"})
	must[AccountResult](h, &AddAccount{Address: "loop2@example.org"})
	must[Done](h, &SetForwarding{Address: "fwd@example.org", Targets: []string{"Out@Remote.net", "bob@example.org"}})
	must[Done](h, &SetForwarding{Address: "keep@example.org", Targets: []string{"out@remote.net"}, KeepLocal: true})
	must[Done](h, &SetForwarding{Address: "loop1@example.org", Targets: []string{"loop2@example.org"}})
	must[Done](h, &SetForwarding{Address: "loop2@example.org", Targets: []string{"loop1@example.org"}})
	must[Done](h, &SetAlias{Address: "team@example.org", Targets: []string{"alice@example.org", "staff@example.org", "partner@remote.net"}})
	must[Done](h, &SetAlias{Address: "staff@example.org", Targets: []string{"bob@example.org", "alice@example.org", "team@example.org"}})
	must[Done](h, &SetAlias{Address: "ghost@example.org", Targets: []string{"nobody@example.org"}})
	must[Done](h, &SetAlias{Address: "alice+lists@example.org", Targets: []string{"carol@example.org"}})

	cases := []struct {
		addr     string
		accounts []string
		external []string
		err      error
	}{
		{addr: "ALICE@example.org", accounts: []string{"alice@example.org"}},
		{addr: "alice+news@example.org", accounts: []string{"alice@example.org"}},
		{addr: "alice+lists@example.org", accounts: []string{"carol@example.org"}}, // exact alias wins over +tag
		{addr: "team@example.org", accounts: []string{"alice@example.org", "bob@example.org"}, external: []string{"partner@remote.net"}},
		{addr: "team+x@example.org", accounts: []string{"alice@example.org", "bob@example.org"}, external: []string{"partner@remote.net"}},
		{addr: "fwd@example.org", accounts: []string{"bob@example.org"}, external: []string{"out@remote.net"}},
		{addr: "keep@example.org", accounts: []string{"keep@example.org"}, external: []string{"out@remote.net"}},
		{addr: "loop1@example.org", accounts: []string{"loop1@example.org"}},
		{addr: "ghost@example.org", err: ErrNoSuchAccount},
		{addr: "nobody@example.org", err: ErrNoSuchAccount},
		{addr: "x@elsewhere.net", err: ErrNoSuchDomain},
		{addr: "bad address", err: ErrInvalidAddress},
	}
	check := func(stage string) {
		for _, c := range cases {
			h.view(func(tx *Tx) error {
				r, err := tx.Resolve(c.addr)
				if c.err != nil {
					if !errors.Is(err, c.err) {
						t.Errorf("%s: Resolve(%q) err %v, want %v", stage, c.addr, err, c.err)
					}
					return nil
				}
				if err != nil || !slices.Equal(r.Accounts, c.accounts) || !slices.Equal(r.External, c.external) {
					t.Errorf("%s: Resolve(%q) = %+v, %v; want %v %v", stage, c.addr, r, err, c.accounts, c.external)
				}
				return nil
			})
		}
	}
	check("no catch-all")
	must[Done](h, &SetCatchAll{Domain: dom, Target: "carol@example.org"})
	for i := range cases {
		if c := &cases[i]; c.addr == "ghost@example.org" || c.addr == "nobody@example.org" {
			c.accounts, c.err = []string{"carol@example.org"}, nil
		}
	}
	check("catch-all")
	must[Done](h, &SetCatchAll{Domain: dom})
	h.view(func(tx *Tx) error {
		if d, _ := tx.Domain(dom); d.CatchAll != "" {
			t.Errorf("catch-all not cleared: %+v", d)
		}
		return nil
	})
}

func TestSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	h.setup()
	for i := range 20 {
		h.deliver("alice@example.org", "", i, int64(100+i), Flags{System: SystemFlags(i % 32)})
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	atSnapshot := dump(t, h.f)
	appliedAtSnapshot := h.f.AppliedIndex()
	// Apply goes on while the snapshot is open and streamed.
	for i := 20; i < 30; i++ {
		h.deliver("alice@example.org", "", i, 10, Flags{})
	}
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	snap.Release()
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}

	other := newHarness(t)
	other.setup() // some unrelated state that the restore replaces
	if err := other.f.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, other.f); got != atSnapshot {
		t.Fatal("restored state differs from the state at snapshot time")
	}
	if other.f.AppliedIndex() != appliedAtSnapshot {
		t.Fatalf("restored applied index %d, want %d", other.f.AppliedIndex(), appliedAtSnapshot)
	}
	// The restored FSM goes on from there.
	other.index = appliedAtSnapshot
	other.deliver("alice@example.org", "", 99, 1, Flags{})
	other.reopen()
	if got := other.uids(other.mailbox("alice@example.org", "INBOX").ID); len(got) != 21 || got[20] != 21 {
		t.Fatalf("after restore and deliver: %v", got)
	}

	// A broken stream leaves the state as it was.
	before := dump(t, other.f)
	if err := other.f.Restore(io.LimitReader(bytes.NewReader(buf.Bytes()), 100)); err == nil {
		t.Fatal("restore of a truncated stream succeeded")
	}
	if err := other.f.Restore(strings.NewReader(strings.Repeat("x", 1<<16))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if dump(t, other.f) != before {
		t.Fatal("failed restore changed the state")
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(other.path), "*.restore-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

func TestViewWaitsForRestore(t *testing.T) {
	h := newHarness(t)
	h.setup()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	done := make(chan error)
	go func() {
		for range 20 {
			if err := h.f.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Readers running during restores never see a closed or half-swapped state.
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		err := h.f.View(func(tx *Tx) error {
			_, err := tx.Account("alice@example.org")
			return err
		})
		if err != nil {
			t.Fatalf("view during restore: %v", err)
		}
	}
}
