package state

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func spamTotals(h *harness, account string) SpamCount {
	h.tb.Helper()
	var c SpamCount
	h.view(func(tx *Tx) (err error) { c, err = tx.SpamTotals(account); return err })
	return c
}

func spamTokens(h *harness, account string, hashes ...uint64) []SpamCount {
	h.tb.Helper()
	var c []SpamCount
	h.view(func(tx *Tx) (err error) { c, err = tx.SpamTokens(account, hashes); return err })
	return c
}

// spamDump is the part of dump that holds the spam buckets.
func spamDump(tb testingT, f *FSM) string {
	var out strings.Builder
	in := false
	for _, line := range strings.Split(dump(tb, f), "\n") {
		if strings.HasPrefix(line, "[") {
			in = strings.HasPrefix(line, "[spam_")
		}
		if in {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

func equalCounts(a, b []SpamCount) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTrainSpamCounts(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &TrainSpam{Account: "alice@example.org", Spam: true, Tokens: SpamTokenHashes{1, 2, 3}})
	must[Done](h, &TrainSpam{Account: "Alice@Example.org", Spam: true, Tokens: SpamTokenHashes{2, 3}})
	must[Done](h, &TrainSpam{Account: "alice@example.org", Tokens: SpamTokenHashes{3, 4}})
	must[Done](h, &TrainSpam{Account: "bob@example.org", Tokens: SpamTokenHashes{1, 5}})

	if got := spamTotals(h, "alice@example.org"); got != (SpamCount{2, 1}) {
		t.Fatalf("alice totals %+v", got)
	}
	if got := spamTotals(h, "bob@example.org"); got != (SpamCount{0, 1}) {
		t.Fatalf("bob totals %+v", got)
	}
	if got := spamTotals(h, ""); got != (SpamCount{2, 2}) {
		t.Fatalf("cluster totals %+v", got)
	}
	if got, want := spamTokens(h, "alice@example.org", 1, 2, 3, 4, 5, 99), []SpamCount{{1, 0}, {2, 0}, {2, 1}, {0, 1}, {0, 0}, {0, 0}}; !equalCounts(got, want) {
		t.Fatalf("alice tokens %+v, want %+v", got, want)
	}
	if got, want := spamTokens(h, "", 5, 1, 3), []SpamCount{{0, 1}, {1, 1}, {2, 1}}; !equalCounts(got, want) {
		t.Fatalf("cluster tokens %+v, want %+v", got, want)
	}
	// An account that does not exist reads as untrained, and cannot train.
	if got := spamTotals(h, "nobody@example.org"); got != (SpamCount{}) {
		t.Fatalf("unknown account totals %+v", got)
	}
	if err := h.do(&TrainSpam{Account: "nobody@example.org", Spam: true, Tokens: SpamTokenHashes{1}}).Err(); !errors.Is(err, ErrNoSuchAccount) {
		t.Fatalf("unknown account: %v", err)
	}
}

func TestTrainSpamRefusalsWriteNothing(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &TrainSpam{Account: "alice@example.org", Spam: true, Tokens: SpamTokenHashes{1, 2}})
	before := spamDump(t, h.f)
	tooMany := make(SpamTokenHashes, MaxSpamTokens+1)
	for i := range tooMany {
		tooMany[i] = uint64(i)
	}
	for name, toks := range map[string]SpamTokenHashes{
		"unsorted":  {3, 1, 2},
		"duplicate": {1, 1},
		"too many":  tooMany,
	} {
		if err := h.do(&TrainSpam{Account: "alice@example.org", Spam: true, Tokens: toks}).Err(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if after := spamDump(t, h.f); after != before {
		t.Fatalf("a refused TrainSpam wrote:\n%s\n%s", before, after)
	}
}

// A body trained with its Blob follows the user's last word: the same
// class again changes nothing, the other class moves it over, and no
// count goes below zero.
func TestTrainSpamByBlobCountsOnceAndUntrains(t *testing.T) {
	h := newHarness(t)
	h.setup()
	b := blobID(7)
	train := func(spam bool, toks ...uint64) {
		t.Helper()
		must[Done](h, &TrainSpam{Account: "alice@example.org", Blob: b, Spam: spam, Tokens: toks})
	}
	trained := func() (bool, bool) {
		var tr, sp bool
		h.view(func(tx *Tx) (err error) { tr, sp, err = tx.SpamTrained("alice@example.org", b); return err })
		return tr, sp
	}
	if tr, _ := trained(); tr {
		t.Fatal("trained before any training")
	}
	train(true, 10, 20)
	train(true, 10, 20) // moved into Junk again, or copied twice
	if got := spamTotals(h, "alice@example.org"); got != (SpamCount{1, 0}) {
		t.Fatalf("after the same training twice: %+v", got)
	}
	if tr, sp := trained(); !tr || !sp {
		t.Fatalf("trained %v spam %v", tr, sp)
	}
	train(false, 10, 20) // moved out of Junk: it was ham after all
	if got := spamTotals(h, "alice@example.org"); got != (SpamCount{0, 1}) {
		t.Fatalf("after untraining: %+v", got)
	}
	if got, want := spamTokens(h, "alice@example.org", 10, 20), []SpamCount{{0, 1}, {0, 1}}; !equalCounts(got, want) {
		t.Fatalf("tokens after untraining %+v", got)
	}
	if got := spamTotals(h, ""); got != (SpamCount{0, 1}) {
		t.Fatalf("cluster after untraining: %+v", got)
	}
	// Untraining tokens that were never counted (a tokenizer that changed
	// in between) leaves them at zero, not below.
	train(true, 10, 30)
	if got, want := spamTokens(h, "alice@example.org", 10, 20, 30), []SpamCount{{1, 0}, {0, 1}, {1, 0}}; !equalCounts(got, want) {
		t.Fatalf("tokens %+v, want %+v", got, want)
	}
	must[Done](h, &TrainSpam{Account: "alice@example.org", Blob: b, Tokens: SpamTokenHashes{10, 30, 40}})
	if got, want := spamTokens(h, "alice@example.org", 10, 20, 30, 40), []SpamCount{{0, 1}, {0, 1}, {0, 1}, {0, 1}}; !equalCounts(got, want) {
		t.Fatalf("tokens %+v, want %+v", got, want)
	}
	// Bob's training of the same body is his own.
	must[Done](h, &TrainSpam{Account: "bob@example.org", Blob: b, Spam: true, Tokens: SpamTokenHashes{10}})
	if got := spamTotals(h, "bob@example.org"); got != (SpamCount{1, 0}) {
		t.Fatalf("bob %+v", got)
	}
}

func TestDeleteAccountDropsItsSpamCounts(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &TrainSpam{Account: "alice@example.org", Blob: blobID(1), Spam: true, Tokens: SpamTokenHashes{1, 2}})
	must[Done](h, &TrainSpam{Account: "bob@example.org", Tokens: SpamTokenHashes{2}})
	alice := h.account("alice@example.org").ID
	must[Done](h, &DeleteAccount{Address: "alice@example.org"})
	h.view(func(tx *Tx) error {
		for _, name := range [][]byte{bktSpamTokens, bktSpamTrained, bktSpamTotals} {
			c := tx.tx.Bucket(name).Cursor()
			prefix := u64(alice)
			if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
				t.Errorf("%s keeps key %x of the deleted account", name, k)
			}
		}
		return nil
	})
	// The cluster-wide model keeps what alice taught; bob keeps his own.
	if got := spamTotals(h, ""); got != (SpamCount{1, 1}) {
		t.Fatalf("cluster %+v", got)
	}
	if got := spamTotals(h, "bob@example.org"); got != (SpamCount{0, 1}) {
		t.Fatalf("bob %+v", got)
	}
	// Added again, the account starts untrained.
	must[AccountResult](h, &AddAccount{Address: "alice@example.org", PasswordHash: "h"})
	if got := spamTotals(h, "alice@example.org"); got != (SpamCount{}) {
		t.Fatalf("re-added account %+v", got)
	}
	var tr bool
	h.view(func(tx *Tx) (err error) { tr, _, err = tx.SpamTrained("alice@example.org", blobID(1)); return err })
	if tr {
		t.Fatal("the re-added account inherited a trained body")
	}
}

// A snapshot carries the spam buckets: a node restored from it scores
// like the one that took it.
func TestSpamCountsSurviveSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	h.setup()
	must[Done](h, &TrainSpam{Account: "alice@example.org", Blob: blobID(1), Spam: true, Tokens: SpamTokenHashes{1, 2, 3}})
	must[Done](h, &TrainSpam{Account: "bob@example.org", Tokens: SpamTokenHashes{3, 4}})
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	other, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if a, b := dump(t, h.f), dump(t, other); a != b {
		t.Fatal("restored state differs")
	} else if !strings.Contains(a, "[spam_tokens]") || !strings.Contains(a, "[spam_trained]") || !strings.Contains(a, "[spam_totals]") {
		t.Fatalf("the dump has no spam buckets:\n%s", a)
	}
	err = other.View(func(tx *Tx) error {
		c, err := tx.SpamTokens("", []uint64{1, 3, 4})
		if err != nil {
			return err
		}
		if want := []SpamCount{{1, 0}, {1, 1}, {0, 1}}; !equalCounts(c, want) {
			t.Errorf("restored cluster tokens %+v, want %+v", c, want)
		}
		tr, sp, err := tx.SpamTrained("alice@example.org", blobID(1))
		if !tr || !sp || err != nil {
			t.Errorf("restored trained body: %v %v %v", tr, sp, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTrainSpamEncoding(t *testing.T) {
	cmd := &TrainSpam{Time: 5, Account: "a@example.org", Blob: blobID(3), Spam: true, Tokens: SpamTokenHashes{1, 1 << 63, ^uint64(0)}}
	data, err := Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != 0x71 {
		t.Fatalf("type byte 0x%02x", data[0])
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	got := back.(*TrainSpam)
	if got.Time != 5 || got.Account != cmd.Account || got.Blob != cmd.Blob || !got.Spam || len(got.Tokens) != 3 || got.Tokens[1] != 1<<63 || got.Tokens[2] != ^uint64(0) {
		t.Fatalf("round trip %+v", got)
	}
	// A thousand tokens stay near 11 KB in the log.
	many := make(SpamTokenHashes, 1000)
	for i := range many {
		many[i] = uint64(i) * 0x9E3779B97F4A7C15
	}
	data, err = Encode(&TrainSpam{Time: 1, Account: "a@example.org", Blob: blobID(1), Tokens: many})
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 11200 {
		t.Fatalf("1000 tokens encode to %d bytes", len(data))
	}
	// Without a blob the field is left out; bad token data is an error.
	data, _ = Encode(&TrainSpam{Time: 1, Account: "a@example.org", Tokens: SpamTokenHashes{1}})
	if bytes.Contains(data, []byte("blob")) {
		t.Fatalf("zero blob encoded: %s", data)
	}
	for _, bad := range []string{
		`{"t":1,"account":"a","tokens":"AAAA"}`,       // 3 bytes
		`{"t":1,"account":"a","tokens":"!!"}`,         // not base64
		`{"t":1,"account":"a","tokens":[1,2]}`,        // numbers
		`{"t":1,"account":"a","tokens":"","extra":1}`, // unknown field
	} {
		if _, err := Decode(append([]byte{0x71}, bad...)); err == nil {
			t.Errorf("decoded %.60s", bad)
		}
	}
}
