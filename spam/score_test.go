package spam

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// memCounts is Counts in memory, trained like the replicated state.
type memCounts struct {
	totals map[string][2]uint64
	tokens map[string]map[uint64]TokenCount
	err    error
}

func newMemCounts() *memCounts {
	return &memCounts{totals: map[string][2]uint64{}, tokens: map[string]map[uint64]TokenCount{}}
}

func (m *memCounts) train(account string, spam bool, hashes []uint64) {
	for _, a := range []string{account, ""} {
		t := m.totals[a]
		if m.tokens[a] == nil {
			m.tokens[a] = map[uint64]TokenCount{}
		}
		for _, h := range hashes {
			c := m.tokens[a][h]
			if spam {
				c.Spam++
			} else {
				c.Ham++
			}
			m.tokens[a][h] = c
		}
		if spam {
			t[0]++
		} else {
			t[1]++
		}
		m.totals[a] = t
	}
}

func (m *memCounts) Totals(account string) (uint64, uint64, error) {
	t := m.totals[account]
	return t[0], t[1], m.err
}

func (m *memCounts) Tokens(account string, hashes []uint64) ([]TokenCount, error) {
	out := make([]TokenCount, len(hashes))
	for i, h := range hashes {
		out[i] = m.tokens[account][h]
	}
	return out, m.err
}

func hashesOf(words ...string) []uint64 {
	out := make([]uint64, len(words))
	for i, w := range words {
		out[i] = TokenHash(w)
	}
	return out
}

func TestScoreChoosesTheModel(t *testing.T) {
	c := newMemCounts()
	msg := hashesOf("viagra", "lottery")
	if p, ex, err := Score(c, "a@x", msg); err != nil || p != 0.5 || ex.Model != ModelNone {
		t.Fatalf("untrained: %v %+v %v", p, ex, err)
	}
	// Other accounts teach the cluster: a's verdict borrows it.
	for range MinTrained {
		c.train("b@x", true, hashesOf("viagra", "lottery", "common"))
		c.train("b@x", false, hashesOf("meeting", "lunch", "common"))
	}
	p, ex, err := Score(c, "a@x", msg)
	if err != nil || ex.Model != ModelCluster || p < 0.9 {
		t.Fatalf("cluster model: %v %+v %v", p, ex, err)
	}
	// a teaches the opposite taste; once it has enough, its own model wins.
	for range MinTrained - 1 {
		c.train("a@x", false, hashesOf("viagra", "lottery"))
		c.train("a@x", true, hashesOf("meeting", "lunch"))
	}
	if _, ex, _ := Score(c, "a@x", msg); ex.Model != ModelCluster {
		t.Fatalf("below MinTrained: %+v", ex)
	}
	c.train("a@x", false, hashesOf("viagra", "lottery"))
	c.train("a@x", true, hashesOf("meeting", "lunch"))
	p, ex, err = Score(c, "a@x", msg)
	if err != nil || ex.Model != ModelAccount || ex.SpamMsgs != MinTrained || p > 0.1 || ex.Clues != 2 {
		t.Fatalf("account model: %v %+v %v", p, ex, err)
	}
	// b still gets the cluster's view (b has its own 20/20: its own model).
	if p, ex, _ := Score(c, "b@x", msg); ex.Model != ModelAccount || p < 0.9 {
		t.Fatalf("b: %v %+v", p, ex)
	}
	// Unknown tokens and tokens that say nothing leave it unsure.
	if p, ex, _ := Score(c, "b@x", hashesOf("never", "seen", "common")); p != 0.5 || ex.Clues != 0 {
		t.Fatalf("unknown tokens: %v %+v", p, ex)
	}
	// Spammy and hammy tokens together: unsure, not a side.
	if p, _, _ := Score(c, "b@x", hashesOf("viagra", "lottery", "meeting", "lunch")); math.Abs(p-0.5) > 0.1 {
		t.Fatalf("mixed: %v", p)
	}
	c.err = errors.New("closed")
	if _, _, err := Score(c, "b@x", msg); err == nil {
		t.Fatal("a read error was not reported")
	}
}

func TestChi2Q(t *testing.T) {
	for _, tc := range []struct {
		x2   float64
		v    int
		want float64
	}{
		{0, 2, 1},
		{2, 2, math.Exp(-1)},
		{4, 4, 3 * math.Exp(-2)},
		{5000, 300, 0},
	} {
		if got := chi2Q(tc.x2, tc.v); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("chi2Q(%v, %d) = %v, want %v", tc.x2, tc.v, got, tc.want)
		}
	}
}

// corpus makes synthetic messages: a spam vocabulary, a ham vocabulary
// and a common one, mixed with noise, in varied MIME shapes, from a seeded
// generator (the figures are the same every run).
type corpus struct {
	rng                *rand.Rand
	spamW, hamW, commW []string
}

func newCorpus(seed uint64) *corpus {
	c := &corpus{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	c.spamW = c.vocab(300)
	c.hamW = c.vocab(300)
	c.commW = c.vocab(800)
	return c
}

func (c *corpus) vocab(n int) []string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	out := make([]string, n)
	for i := range out {
		b := make([]byte, 3+c.rng.IntN(7))
		for j := range b {
			b[j] = letters[c.rng.IntN(len(letters))]
		}
		out[i] = string(b)
	}
	return out
}

func (c *corpus) pick(spam bool) string {
	own, other := c.hamW, c.spamW
	if spam {
		own, other = c.spamW, c.hamW
	}
	switch r := c.rng.Float64(); {
	case r < 0.20: // the class's own words (Zipf-ish: some much more often)
		return own[int(float64(len(own))*c.rng.Float64()*c.rng.Float64())]
	case r < 0.30: // the other class's words: overlap
		return other[c.rng.IntN(len(other))]
	case r < 0.35: // noise: a fresh random word
		return c.vocab(1)[0]
	default:
		return c.commW[int(float64(len(c.commW))*c.rng.Float64()*c.rng.Float64())]
	}
}

func (c *corpus) words(spam bool, n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = c.pick(spam)
	}
	return strings.Join(ws, " ")
}

// message is one synthetic message; its senders' domains overlap too.
func (c *corpus) message(spam bool) string {
	dom := []string{"example.org", "mail.example", "news.example"}[c.rng.IntN(3)]
	if spam && c.rng.IntN(2) == 0 {
		dom = fmt.Sprintf("promo%d.example", c.rng.IntN(20))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s <%s@%s>\r\nTo: user@example.org\r\nSubject: %s\r\nMIME-Version: 1.0\r\n",
		c.pick(spam), c.pick(spam), dom, c.words(spam, 2+c.rng.IntN(5)))
	body := c.words(spam, 30+c.rng.IntN(120))
	switch c.rng.IntN(3) {
	case 0:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", body)
	case 1:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n",
			base64.StdEncoding.EncodeToString([]byte(body)))
	default:
		fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\n%s\r\n"+
			"--zz\r\nContent-Type: text/html\r\n\r\n<html><body><p>%s</p></body></html>\r\n--zz--\r\n", body, body)
	}
	return b.String()
}

// Trained on 200 spam and 200 ham, the classifier sorts a held-out 100 and
// 100 it never saw.
func TestAccuracyOnSyntheticCorpus(t *testing.T) {
	c := newCorpus(13)
	counts := newMemCounts()
	for i := range 400 {
		spam := i%2 == 0
		hs, err := Tokens(strings.NewReader(c.message(spam)))
		if err != nil {
			t.Fatal(err)
		}
		counts.train("user@example.org", spam, hs)
	}
	right, unsure := 0, 0
	for i := range 200 {
		spam := i%2 == 0
		hs, _ := Tokens(strings.NewReader(c.message(spam)))
		p, ex, err := Score(counts, "user@example.org", hs)
		if err != nil || ex.Model != ModelAccount {
			t.Fatalf("%v %+v", err, ex)
		}
		if spam && p > 0.5 || !spam && p < 0.5 {
			right++
		}
		if p > 0.2 && p < 0.8 {
			unsure++
		}
	}
	acc := float64(right) / 200
	t.Logf("synthetic corpus: %.1f%% right on 100 spam + 100 ham held out (%d scored between 0.2 and 0.8)", 100*acc, unsure)
	if acc < 0.9 {
		t.Fatalf("accuracy %.1f%%, want at least 90%%", 100*acc)
	}
}
