package inbound

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/spam"
)

// Keywords stored with a copy the spam filter judged, as Thunderbird and
// Apple Mail use them.
const (
	KeywordJunk    = "$Junk"
	KeywordNotJunk = "$NotJunk"
)

// SpamConfig is how the spam verdict is applied.
type SpamConfig struct {
	Counts spam.Counts
	// Threshold is the score (0..1) at and above which a copy goes to
	// Junk. Default 0.9.
	Threshold float64
	Metrics   *Metrics
	Logger    *slog.Logger
}

// Spam is the spam-filter inspector.
type Spam struct{ cfg SpamConfig }

// NewSpam builds it.
func NewSpam(cfg SpamConfig) (*Spam, error) {
	if cfg.Threshold == 0 {
		cfg.Threshold = 0.9
	}
	if cfg.Threshold < 0 || cfg.Threshold > 1 {
		return nil, fmt.Errorf("spam threshold %v: want a score between 0 and 1", cfg.Threshold)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Spam{cfg: cfg}, nil
}

// Name is "spam".
func (s *Spam) Name() string { return "spam" }

// Inspect scores mail from other servers for each account it goes to.
// The X-Spam fields carry the score of the one account (or, for several,
// of the cluster-wide model); each account's own verdict decides where
// its copy goes and which keyword it gets.
func (s *Spam) Inspect(ctx context.Context, in *delivery.Inspection) error {
	if in.Source != delivery.SourceMX || len(in.Accounts) == 0 {
		return nil
	}
	tokens, err := spam.Tokens(in.Original())
	if err != nil {
		s.cfg.Logger.Warn("spam filter: could not read the message; no verdict", "err", err)
		return nil
	}
	headerAccount := ""
	if len(in.Accounts) == 1 {
		headerAccount = in.Accounts[0]
	}
	for _, acct := range in.Accounts {
		score, ex, err := spam.Score(s.cfg.Counts, acct, tokens)
		if err != nil {
			s.cfg.Logger.Warn("spam filter: no verdict", "account", acct, "err", err)
			continue
		}
		junk := ex.Model != spam.ModelNone && score >= s.cfg.Threshold
		verdict := "ham"
		switch {
		case ex.Model == spam.ModelNone:
			verdict = "untrained"
		case junk:
			verdict = "junk"
		}
		s.cfg.Metrics.Count("spam", verdict)
		s.cfg.Logger.Info("spam verdict", "account", acct, "score", fmt.Sprintf("%.3f", score), "model", ex.Model,
			"clues", ex.Clues, "tokens", ex.Tokens, "verdict", verdict)
		if junk {
			in.Junk(acct, KeywordJunk)
		}
		if acct == headerAccount {
			s.addFields(in, score, ex, junk)
		}
	}
	if headerAccount == "" {
		if score, ex, err := spam.Score(s.cfg.Counts, "", tokens); err == nil {
			s.addFields(in, score, ex, ex.Model != spam.ModelNone && score >= s.cfg.Threshold)
		}
	}
	return nil
}

func (s *Spam) addFields(in *delivery.Inspection, score float64, ex spam.Explanation, junk bool) {
	status := "No"
	if junk {
		status = "Yes"
	}
	in.AddField(fmt.Sprintf("X-Spam-Status: %s, score=%.3f threshold=%.3f model=%s clues=%d", status, score, s.cfg.Threshold, ex.Model, ex.Clues))
	in.AddField(fmt.Sprintf("X-Spam-Score: %.3f", score))
}
