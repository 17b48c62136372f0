package spam

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// TokenCount is how many trained spam and ham messages held a token.
type TokenCount struct {
	Spam, Ham uint64
}

// Counts are the trained counts, read locally (the replicated state: see
// replication.Store.SpamCounts). Account "" is the cluster-wide model, the
// sum over every account.
type Counts interface {
	// Totals is how many spam and ham messages were trained.
	Totals(account string) (spamMsgs, hamMsgs uint64, err error)
	// Tokens returns the counts of hashes, in the same order (zero for a
	// token never trained).
	Tokens(account string, hashes []uint64) ([]TokenCount, error)
}

// MinTrained is how many spam and how many ham messages a model needs
// before it judges: an account's own model once it has MinTrained of each,
// else the cluster-wide model once that has MinTrained of each, else
// neither (Score is then 0.5, "unsure"). A new account thus borrows what
// every other user taught, and gets its own taste once it has taught
// enough itself.
const MinTrained = 20

// Model names, in Explanation.Model.
const (
	ModelAccount = "account"
	ModelCluster = "cluster"
	ModelNone    = "none"
)

// Explanation says how a score came about.
type Explanation struct {
	Model    string // ModelAccount, ModelCluster or ModelNone
	SpamMsgs uint64 // messages trained in that model
	HamMsgs  uint64
	Tokens   int // tokens of the message
	Clues    int // tokens strong enough to count (at most MaxClues)
}

// The constants of the scoring rule (Gary Robinson's, as SpamBayes uses
// it).
const (
	// priorStrength (s) and priorProb (x): a token seen n times is
	// believed (s·x + n·p)/(s + n), so a token seen once or twice cannot
	// decide on its own.
	priorStrength = 0.45
	priorProb     = 0.5
	// minStrength: tokens within this of 0.5 say nothing and are left out.
	minStrength = 0.1
	// MaxClues is the most tokens combined: the strongest ones.
	MaxClues = 150
)

// Score is the probability (0 to 1) that a message with these token hashes
// (from Tokens) is spam, for account, by the model MinTrained selects.
//
// The rule is Robinson–Fisher: each token's spam probability is
// p = s/(s+h) with s and h the fractions of trained spam and ham messages
// that held it, moderated by the prior above; the MaxClues tokens furthest
// from 0.5 (at least minStrength away) are combined with Fisher's method,
// once for "spam" (the product of 1−p) and once for "ham" (the product of
// p), each turned into a significance by the chi-square distribution with
// 2n degrees of freedom; the score is (S − H + 1)/2. Near 1 means spam,
// near 0 ham, and near 0.5 unsure, which includes the messages that look
// like both (S and H both high): unlike a naive Bayesian product, this
// rule says so instead of picking a side. The result is a pure function
// of the counts, so every node that applied the same log agrees.
func Score(c Counts, account string, hashes []uint64) (float64, Explanation, error) {
	ex := Explanation{Model: ModelNone, Tokens: len(hashes)}
	model := account
	spamN, hamN, err := c.Totals(account)
	if err != nil {
		return 0.5, ex, fmt.Errorf("spam: read totals: %w", err)
	}
	ex.Model = ModelAccount
	if account == "" || spamN < MinTrained || hamN < MinTrained {
		model = ""
		ex.Model = ModelCluster
		if spamN, hamN, err = c.Totals(""); err != nil {
			return 0.5, ex, fmt.Errorf("spam: read totals: %w", err)
		}
	}
	ex.SpamMsgs, ex.HamMsgs = spamN, hamN
	if spamN < MinTrained || hamN < MinTrained {
		ex.Model = ModelNone
		return 0.5, ex, nil
	}
	counts, err := c.Tokens(model, hashes)
	if err != nil {
		return 0.5, ex, fmt.Errorf("spam: read token counts: %w", err)
	}
	if len(counts) != len(hashes) {
		return 0.5, ex, fmt.Errorf("spam: %d token counts for %d tokens", len(counts), len(hashes))
	}
	type clue struct {
		hash uint64
		p    float64
	}
	clues := make([]clue, 0, len(hashes))
	for i, tc := range counts {
		if tc.Spam == 0 && tc.Ham == 0 {
			continue
		}
		p := tokenProb(tc, spamN, hamN)
		if math.Abs(p-0.5) >= minStrength {
			clues = append(clues, clue{hashes[i], p})
		}
	}
	// Strongest first; ties by hash, so the choice is the same everywhere.
	slices.SortFunc(clues, func(a, b clue) int {
		if c := cmp.Compare(math.Abs(b.p-0.5), math.Abs(a.p-0.5)); c != 0 {
			return c
		}
		return cmp.Compare(a.hash, b.hash)
	})
	clues = clues[:min(len(clues), MaxClues)]
	ex.Clues = len(clues)
	if len(clues) == 0 {
		return 0.5, ex, nil
	}
	var lnSpam, lnHam float64 // ln Π(1−p), ln Π p
	for _, c := range clues {
		lnSpam += math.Log(1 - c.p)
		lnHam += math.Log(c.p)
	}
	n := len(clues)
	s := 1 - chi2Q(-2*lnSpam, 2*n)
	h := 1 - chi2Q(-2*lnHam, 2*n)
	return min(max((s-h+1)/2, 0), 1), ex, nil
}

// tokenProb is Robinson's moderated spam probability of one token.
func tokenProb(tc TokenCount, spamN, hamN uint64) float64 {
	sr := min(float64(tc.Spam)/float64(spamN), 1)
	hr := min(float64(tc.Ham)/float64(hamN), 1)
	p := sr / (sr + hr)
	n := float64(tc.Spam + tc.Ham)
	return (priorStrength*priorProb + n*p) / (priorStrength + n)
}

// chi2Q is the probability that a chi-square variable with v (even)
// degrees of freedom is at least x2.
func chi2Q(x2 float64, v int) float64 {
	m := x2 / 2
	term := math.Exp(-m)
	sum := term
	for i := 1; i < v/2; i++ {
		term *= m / float64(i)
		sum += term
	}
	return min(sum, 1)
}
