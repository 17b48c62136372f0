package state

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
)

// fillMailbox delivers n messages to alice's INBOX, 1000 targets per
// command; every third message is \Seen-less (unseen), every 100th \Deleted.
func fillMailbox(h *harness, n int) Mailbox {
	const perCommand = 1000
	var batch []Command
	for start := 0; start < n; start += perCommand {
		c := &Deliver{Blob: blobID(start / perCommand), Size: 1000, Summary: []byte(`{"subject":"x"}`)}
		for i := start; i < min(start+perCommand, n); i++ {
			f := Flags{System: FlagSeen}
			if i%3 == 0 {
				f.System = 0
			}
			if i%100 == 0 {
				f.System |= FlagDeleted
			}
			c.Targets = append(c.Targets, DeliverTarget{Account: "alice@example.org", Flags: f})
		}
		batch = append(batch, c)
		if len(batch) == 10 {
			h.apply(batch...)
			batch = nil
		}
	}
	if len(batch) > 0 {
		h.apply(batch...)
	}
	return h.mailbox("alice@example.org", "INBOX")
}

func TestLargeMailboxOpens(t *testing.T) {
	h := newHarness(t)
	h.setup()
	const n = 100_000
	start := time.Now()
	inbox := fillMailbox(h, n)
	t.Logf("built %d messages in %v", n, time.Since(start))
	h.takeEvents()
	if inbox.Messages != n || inbox.UIDNext != n+1 || inbox.Unseen != n/3+1 || inbox.Deleted != n/100 || inbox.Size != 1000*n {
		t.Fatalf("counters %+v", inbox)
	}
	h.reopen()
	start = time.Now()
	h.view(func(tx *Tx) error {
		mb, err := tx.MailboxByID(inbox.ID)
		if err != nil {
			return err
		}
		uids, err := tx.UIDs(mb.ID)
		if err != nil {
			return err
		}
		if len(uids) != n || uids[0] != 1 || uids[n-1] != n {
			t.Errorf("UIDs: %d, first %d last %d", len(uids), uids[0], uids[len(uids)-1])
		}
		unseen, err := tx.Unseen(mb.ID)
		if err != nil {
			return err
		}
		if len(unseen) != int(mb.Unseen) || unseen[0] != 1 || unseen[1] != 4 {
			t.Errorf("unseen %d (counter %d), starts %v", len(unseen), mb.Unseen, unseen[:2])
		}
		first, err := tx.FirstUnseen(mb.ID)
		if err != nil || first != 1 {
			t.Errorf("first unseen %d %v", first, err)
		}
		var got []uint32
		err = tx.Messages(mb.ID, 50_000, 50_009, func(m Message) error {
			got = append(got, m.UID)
			return nil
		})
		if err != nil || len(got) != 10 || got[0] != 50_000 {
			t.Errorf("range 50000:50009 → %v %v", got, err)
		}
		deleted, err := tx.Deleted(mb.ID)
		if err != nil || len(deleted) != n/100 {
			t.Errorf("deleted %d %v", len(deleted), err)
		}
		return nil
	})
	t.Logf("opened a %d-message mailbox (status, UIDs, unseen, a range) in %v", n, time.Since(start))

	// EXPUNGE over the big mailbox uses the \Deleted index.
	r := must[ExpungeResult](h, &Expunge{MailboxID: inbox.ID, OnlyDeleted: true})
	if r.UIDs.Len() != n/100 {
		t.Fatalf("expunged %d", r.UIDs.Len())
	}
	// STORE 1:* +FLAGS \Seen gives a compact result: one group, ranges.
	fr := must[FlagsResult](h, &SetFlags{MailboxID: inbox.ID, UIDs: UIDSet{{1, math.MaxUint32}}, Op: FlagsAdd, Flags: Flags{System: FlagSeen}})
	wantChanged := 0
	for i := range n {
		if i%3 == 0 && i%100 != 0 {
			wantChanged++
		}
	}
	if len(fr.Changed) != 1 || fr.Changed[0].UIDs.Len() != wantChanged || fr.Changed[0].Flags.System != FlagSeen {
		t.Fatalf("STORE +FLAGS \\Seen changed %d groups, want one group of %d", len(fr.Changed), wantChanged)
	}
	if mb := h.mailbox("alice@example.org", "INBOX"); mb.Unseen != 0 || mb.Messages != n-n/100 {
		t.Fatalf("after store and expunge %+v", mb)
	}
}

// BenchmarkApplyDeliverBatch64 applies batches of 64 one-target deliveries,
// as raft's BatchingFSM hands them over under load. "fsync" is the
// production setting; "nosync" shows the CPU part alone.
func BenchmarkApplyDeliverBatch64(b *testing.B) {
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(mode.name, func(b *testing.B) {
			h := newHarness(b)
			h.setup()
			h.f.Close()
			f, err := Open(h.path, Options{NoSync: mode.noSync})
			if err != nil {
				b.Fatal(err)
			}
			h.f = f
			const batch = 64
			n := 0
			for b.Loop() {
				entries := make([]consensus.Entry, batch)
				for i := range entries {
					n++
					entries[i] = h.entry(&Deliver{Blob: blobID(n), Size: 4096, Summary: make([]byte, 600),
						Targets: []DeliverTarget{{Account: "alice@example.org"}}})
				}
				if _, err := h.f.Apply(entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "delivers/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/batch")
		})
	}
}

func benchLarge(b *testing.B) (*harness, Mailbox) {
	h := newHarness(b)
	h.setup()
	inbox := fillMailbox(h, 100_000)
	h.reopen()
	return h, inbox
}

func BenchmarkOpenMailbox100k(b *testing.B) {
	h, inbox := benchLarge(b)
	b.ResetTimer()
	for b.Loop() {
		err := h.f.View(func(tx *Tx) error {
			mb, err := tx.MailboxByID(inbox.ID)
			if err != nil {
				return err
			}
			uids, err := tx.UIDs(mb.ID)
			if err != nil || len(uids) != 100_000 {
				return fmt.Errorf("uids %d %v", len(uids), err)
			}
			_, err = tx.Unseen(mb.ID)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/open")
}

func BenchmarkReadFlags100k(b *testing.B) {
	h, inbox := benchLarge(b)
	b.ResetTimer()
	for b.Loop() {
		n := 0
		err := h.f.View(func(tx *Tx) error {
			return tx.Flags(inbox.ID, 1, math.MaxUint32, func(uint32, Flags, uint64) error {
				n++
				return nil
			})
		})
		if err != nil || n != 100_000 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/100k")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/message")
}

func BenchmarkReadMessages100k(b *testing.B) {
	h, inbox := benchLarge(b)
	b.ResetTimer()
	for b.Loop() {
		n := 0
		err := h.f.View(func(tx *Tx) error {
			return tx.Messages(inbox.ID, 1, math.MaxUint32, func(Message) error {
				n++
				return nil
			})
		})
		if err != nil || n != 100_000 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/100k")
}
