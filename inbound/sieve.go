package inbound

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/sieve"
)

// SieveStore is where the users' scripts and vacation records live;
// *replication.Store has it.
type SieveStore interface {
	// ActiveSieveScript reads this node's state: delivery has passed the
	// addressing barrier, which covers scripts, at RCPT.
	ActiveSieveScript(ctx context.Context, account string) (state.SieveScript, bool, error)
	// ClaimVacation records a reply to sender unless one went out within
	// days; false means not due.
	ClaimVacation(ctx context.Context, account, sender, handle string, days int) (bool, error)
}

// Submitter sends a message the server writes itself (a vacation reply)
// from an account, with the null envelope sender.
type Submitter interface {
	SubmitReply(ctx context.Context, account, to string, message []byte) error
}

// SieveConfig is how the users' scripts run.
type SieveConfig struct {
	Store     SieveStore
	Submitter Submitter // nil: vacation replies are not sent
	Hostname  string    // for the replies' Message-ID
	Metrics   *Metrics
	Logger    *slog.Logger
	Now       func() time.Time
}

// Sieve runs each recipient account's active Sieve script.
type Sieve struct {
	cfg SieveConfig

	mu       sync.Mutex
	compiled map[[32]byte]*sieve.Script // by script content; bounded
}

// maxCompiled bounds the compiled scripts kept; past it the cache starts
// over (compiling is cheap, a few hundred microseconds).
const maxCompiled = 1024

// NewSieve builds it.
func NewSieve(cfg SieveConfig) *Sieve {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sieve{cfg: cfg, compiled: make(map[[32]byte]*sieve.Script)}
}

// Name is "sieve".
func (s *Sieve) Name() string { return "sieve" }

// Inspect runs the scripts of mail for local accounts (from other servers
// and from authenticated users; never APPEND). A script that cannot be
// read or run keeps the message where it was going: a user's rule never
// loses mail. "keep" files where the message was going before the script
// ran, which is Junk when an earlier verdict said so.
func (s *Sieve) Inspect(ctx context.Context, in *delivery.Inspection) error {
	if in.Source == delivery.SourceAppend {
		return nil
	}
	var header []byte
	for _, acct := range in.Accounts {
		sc, ok, err := s.cfg.Store.ActiveSieveScript(ctx, acct)
		if err != nil {
			s.cfg.Logger.Warn("sieve: the active script could not be read; kept", "account", acct, "err", err)
			continue
		}
		if !ok {
			continue
		}
		prog, err := s.compile(sc.Content)
		if err != nil {
			s.cfg.Metrics.Count("sieve", "broken")
			s.cfg.Logger.Warn("sieve: the active script does not compile; kept", "account", acct, "script", sc.Name, "err", err)
			continue
		}
		if header == nil {
			header = in.HeaderBytes()
		}
		to := in.Via[acct]
		if to == "" {
			to = acct
		}
		own := []string{acct}
		if !strings.EqualFold(to, acct) {
			own = append(own, to)
		}
		out, err := prog.Run(ctx, sieve.Envelope{From: in.Sender, To: to, Auth: in.Account}, sieve.Message{Header: header, Size: in.Size()}, own)
		if err != nil {
			s.cfg.Metrics.Count("sieve", "runtime_error")
			s.cfg.Logger.Info("sieve: the script failed while running; kept", "account", acct, "script", sc.Name, "err", err)
		}
		s.apply(ctx, in, acct, out)
	}
	return nil
}

// apply turns one account's outcome into delivery decisions.
func (s *Sieve) apply(ctx context.Context, in *delivery.Inspection, acct string, out sieve.Outcome) {
	before := in.Targets(acct)
	var targets []delivery.Target
	if out.Keep {
		for _, t := range before {
			targets = append(targets, delivery.Target{Mailbox: t.Mailbox, Flags: mergeFlags(t.Flags, out.KeepFlags)})
		}
	}
	for _, f := range out.FileInto {
		if strings.EqualFold(f.Mailbox, "INBOX") {
			f.Mailbox = ""
		}
		t := delivery.Target{Mailbox: f.Mailbox, Flags: f.Flags}
		if !slices.ContainsFunc(targets, func(o delivery.Target) bool { return strings.EqualFold(o.Mailbox, t.Mailbox) }) {
			targets = append(targets, t)
		}
	}
	redirected := 0
	for _, to := range out.Redirect {
		if err := in.Redirect(acct, to); err != nil {
			s.cfg.Logger.Warn("sieve: redirect not possible; kept", "account", acct, "to", to, "err", err)
			if len(targets) == 0 {
				targets = before
			}
			continue
		}
		redirected++
	}
	in.SetTargets(acct, targets)
	verdict := "keep"
	switch {
	case len(targets) == 0 && redirected == 0:
		verdict = "discard"
	case len(out.FileInto) > 0:
		verdict = "fileinto"
	case redirected > 0:
		verdict = "redirect"
	}
	s.cfg.Metrics.Count("sieve", verdict)
	s.cfg.Logger.Info("sieve verdict", "account", acct, "verdict", verdict, "targets", len(targets), "redirects", redirected,
		"vacation", out.Vacation != nil)
	if v := out.Vacation; v != nil && s.cfg.Submitter != nil {
		in.AfterCommit(func(ctx context.Context) { s.vacation(ctx, acct, v) })
	}
}

// vacation sends one reply if none went to the sender within its days,
// cluster-wide. A failure costs one reply, never the message.
func (s *Sieve) vacation(ctx context.Context, acct string, v *sieve.Vacation) {
	due, err := s.cfg.Store.ClaimVacation(ctx, acct, v.To, v.Handle, v.Days)
	if err != nil {
		s.cfg.Logger.Warn("vacation: could not record the reply; not sent", "account", acct, "to", v.To, "err", err)
		return
	}
	if !due {
		s.cfg.Metrics.Count("vacation", "not_due")
		return
	}
	if err := s.cfg.Submitter.SubmitReply(ctx, acct, v.To, v.Message(s.cfg.Now(), s.cfg.Hostname)); err != nil {
		s.cfg.Metrics.Count("vacation", "failed")
		s.cfg.Logger.Warn("vacation: the reply could not be queued", "account", acct, "to", v.To, "err", err)
		return
	}
	s.cfg.Metrics.Count("vacation", "sent")
	s.cfg.Logger.Info("vacation reply queued", "account", acct, "to", v.To)
}

func (s *Sieve) compile(content string) (*sieve.Script, error) {
	key := sha256.Sum256([]byte(content))
	s.mu.Lock()
	prog, ok := s.compiled[key]
	s.mu.Unlock()
	if ok {
		return prog, nil
	}
	prog, err := sieve.Compile([]byte(content))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.compiled) >= maxCompiled {
		clear(s.compiled)
	}
	s.compiled[key] = prog
	s.mu.Unlock()
	return prog, nil
}

func mergeFlags(a, b []string) []string {
	out := slices.Clone(a)
	for _, f := range b {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}
