package replication_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/spam"
)

func newSpamStore(t *testing.T) (*replication.Store, *state.FSM) {
	t.Helper()
	fsm, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	s := replication.New(replication.Config{Consensus: &oneNode{fsm: fsm}, State: fsm})
	ctx := context.Background()
	if err := s.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice@example.org", "bob@example.org"} {
		if _, err := s.AddUser(ctx, replication.NewUser{Address: u, Password: "a long enough password"}); err != nil {
			t.Fatal(err)
		}
	}
	return s, fsm
}

// stateSize is the size of the state as a snapshot would ship it.
func stateSize(t *testing.T, fsm *state.FSM) int64 {
	t.Helper()
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	n, err := snap.WriteTo(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// synthMessage is a message of one class: words from the class's own
// vocabulary, the other class's (overlap), a shared one and noise.
func synthMessage(rng *rand.Rand, isSpam bool) string {
	word := func(prefix string, n int) string {
		i := int(float64(n) * rng.Float64() * rng.Float64())
		return fmt.Sprintf("%s%x", prefix, i*2654435761%1000003)
	}
	own, other := "ham", "spm"
	if isSpam {
		own, other = other, own
	}
	pick := func() string {
		switch r := rng.Float64(); {
		case r < 0.2:
			return word(own, 300)
		case r < 0.3:
			return fmt.Sprintf("%s%x", other, rng.IntN(300)*2654435761%1000003)
		case r < 0.35:
			return fmt.Sprintf("noise%d", rng.Uint32())
		default:
			return word("com", 800)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s@example.net\r\nSubject: %s %s %s\r\n\r\n", pick(), pick(), pick(), pick())
	for i := range 40 + rng.IntN(120) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(pick())
	}
	return b.String()
}

func blobN(n int) state.BlobID {
	var id state.BlobID
	binary.BigEndian.PutUint64(id[:], uint64(n)+1)
	return id
}

// Training through the store (one TrainSpam per message) and scoring from
// its counts: the classifier learns, and the state grows by a measured
// amount per trained message.
func TestSpamTrainingThroughTheStore(t *testing.T) {
	s, fsm := newSpamStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	before := stateSize(t, fsm)
	const trained = 400
	for i := range trained {
		isSpam := i%2 == 0
		toks, err := spam.Tokens(strings.NewReader(synthMessage(rng, isSpam)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.TrainSpam(ctx, "alice@example.org", blobN(i), isSpam, toks); err != nil {
			t.Fatal(err)
		}
	}
	after := stateSize(t, fsm)
	t.Logf("state grew %d bytes for %d trained messages: %d bytes per trained message (per-account and cluster-wide counts)",
		after-before, trained, (after-before)/trained)

	right := 0
	for i := range 200 {
		isSpam := i%2 == 0
		toks, _ := spam.Tokens(strings.NewReader(synthMessage(rng, isSpam)))
		p, ex, err := spam.Score(s.SpamCounts(), "alice@example.org", toks)
		if err != nil || ex.Model != spam.ModelAccount {
			t.Fatalf("score: %v %+v", err, ex)
		}
		if isSpam && p > 0.5 || !isSpam && p < 0.5 {
			right++
		}
	}
	t.Logf("held out 100 spam + 100 ham: %d%% right", right/2)
	if right < 180 {
		t.Fatalf("%d of 200 right, want at least 180", right)
	}
	// Bob has trained nothing: the cluster-wide model (alice's teaching)
	// judges his mail.
	toks, _ := spam.Tokens(strings.NewReader(synthMessage(rng, true)))
	if _, ex, _ := spam.Score(s.SpamCounts(), "bob@example.org", toks); ex.Model != spam.ModelCluster {
		t.Fatalf("bob's model %+v", ex)
	}
	// Unsorted input with duplicates is put in order before proposing.
	if err := s.TrainSpam(ctx, "bob@example.org", state.BlobID{}, true, []uint64{9, 3, 9, 1}); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.SpamCounts().Totals("bob@example.org"); n != 1 {
		t.Fatalf("bob's spam count %d", n)
	}
	if err := s.TrainSpam(ctx, "nobody@example.org", state.BlobID{}, true, []uint64{1}); !errors.Is(err, replication.ErrNoSuchAccount) {
		t.Fatalf("unknown account: %v", err)
	}
	// Deleting alice drops her counts; the cluster keeps them.
	if err := s.DeleteUser(ctx, "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	if sp, hm, _ := s.SpamCounts().Totals("alice@example.org"); sp != 0 || hm != 0 {
		t.Fatalf("deleted account still has %d/%d", sp, hm)
	}
	if sp, hm, _ := s.SpamCounts().Totals(""); sp != trained/2+1 || hm != trained/2 {
		t.Fatalf("cluster totals %d/%d", sp, hm)
	}
}

// The trainer does its work off the caller's path: queued bodies are
// tokenized and trained, a body already trained in the same class is not
// read again, and failures are logged.
func TestSpamTrainer(t *testing.T) {
	s, _ := newSpamStore(t)
	var logs lockedLog
	tr := replication.NewSpamTrainer(s, slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(tr.Close)
	var reads atomic.Int32
	replication.SetSpamTrainerTokens(tr, func(ctx context.Context, b state.BlobID) ([]uint64, error) {
		reads.Add(1)
		if b == blobN(99) {
			return nil, replication.ErrBodyUnavailable
		}
		return []uint64{uint64(b[7]), 1000}, nil
	})
	totals := func(account string) (uint64, uint64) {
		sp, hm, err := s.SpamCounts().Totals(account)
		if err != nil {
			t.Fatal(err)
		}
		return sp, hm
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	tr.Train("alice@example.org", []state.BlobID{blobN(1), blobN(2)}, true)
	waitUntil("two spam trainings", func() bool { sp, _ := totals("alice@example.org"); return sp == 2 })
	tr.Train("alice@example.org", []state.BlobID{blobN(1)}, true) // again: nothing to do
	tr.Train("alice@example.org", []state.BlobID{blobN(2)}, false)
	waitUntil("one moved to ham", func() bool { sp, hm := totals("alice@example.org"); return sp == 1 && hm == 1 })
	if n := reads.Load(); n != 3 {
		t.Fatalf("%d bodies read, want 3 (the repeated spam training reads none)", n)
	}
	counts, _ := s.SpamCounts().Tokens("alice@example.org", []uint64{1000, 2, 3})
	if counts[0] != (spam.TokenCount{Spam: 1, Ham: 1}) || counts[1] != (spam.TokenCount{Spam: 1}) || counts[2] != (spam.TokenCount{Ham: 1}) {
		t.Fatalf("token counts %+v", counts)
	}
	// A body that cannot be read and an unknown account: logged or
	// skipped, and the worker goes on.
	tr.Train("alice@example.org", []state.BlobID{blobN(99)}, true)
	tr.Train("nobody@example.org", []state.BlobID{blobN(5)}, true)
	tr.Train("bob@example.org", []state.BlobID{blobN(6)}, false)
	waitUntil("bob's training", func() bool { _, hm := totals("bob@example.org"); return hm == 1 })
	if !strings.Contains(logs.String(), "spam training failed") {
		t.Fatalf("the unreadable body was not logged: %s", logs.String())
	}
	tr.Close()
	tr.Train("bob@example.org", []state.BlobID{blobN(7)}, false) // after Close: ignored, no panic
}

type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
