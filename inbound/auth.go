package inbound

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/mailauth/verify"
)

// DMARC actions for a failing message under p=reject.
const (
	RejectRefuses = "reject" // 550 5.7.1, nothing stored
	RejectJunks   = "junk"   // stored in Junk
)

// AuthConfig is how sender authentication is applied.
type AuthConfig struct {
	Checker    *verify.Checker
	AuthServID string // the name in our Authentication-Results fields
	// OnReject is RejectRefuses (default) or RejectJunks.
	OnReject string
	// IsLocalDomain reports whether a domain is one of the cluster's:
	// mail from outside claiming one in From: that does not pass DMARC
	// goes to Junk, whatever the domain's own policy says.
	IsLocalDomain func(ctx context.Context, domain string) bool
	Metrics       *Metrics
	Logger        *slog.Logger
}

// Auth is the sender-authentication inspector.
type Auth struct{ cfg AuthConfig }

// NewAuth builds it.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	switch cfg.OnReject {
	case "":
		cfg.OnReject = RejectRefuses
	case RejectRefuses, RejectJunks:
	default:
		return nil, fmt.Errorf("dmarc reject action %q: want %q or %q", cfg.OnReject, RejectRefuses, RejectJunks)
	}
	if cfg.AuthServID == "" {
		return nil, fmt.Errorf("inbound: an authserv-id is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Auth{cfg: cfg}, nil
}

// Name is "auth".
func (a *Auth) Name() string { return "auth" }

// Inspect checks mail from other servers: it drops arriving
// Authentication-Results fields that claim our name, adds ours, and
// applies DMARC.
func (a *Auth) Inspect(ctx context.Context, in *delivery.Inspection) error {
	if in.Source != delivery.SourceMX {
		return nil
	}
	forged := in.RemoveFields(func(name, value string) bool {
		return strings.EqualFold(name, verify.FieldName) && verify.Forged(a.cfg.AuthServID, value)
	})
	res, err := a.cfg.Checker.Check(ctx, verify.Input{IP: in.Client.IP, Helo: in.Client.Helo, MailFrom: in.Sender, Message: in.Original()})
	if err != nil {
		return fmt.Errorf("inbound: reading the message to check its sender: %w", err)
	}
	in.AddField(res.Header(a.cfg.AuthServID))
	a.count(res)

	action := "none"
	switch {
	case res.Policy == verify.PolicyReject && a.cfg.OnReject == RejectRefuses:
		action = "reject"
	case res.Policy == verify.PolicyReject, res.Policy == verify.PolicyQuarantine:
		action = "junk"
	case res.DMARC.Result == verify.TempError && res.DMARC.Requested == verify.PolicyReject && a.cfg.OnReject == RejectRefuses:
		// The domain asks for refusal and an aligned check could not be
		// made: the sender retries, by when the lookup may answer.
		action = "defer"
	case res.DMARC.Result == verify.TempError && (res.DMARC.Requested == verify.PolicyReject || res.DMARC.Requested == verify.PolicyQuarantine):
		action = "junk"
	case res.DMARC.Result != verify.Pass && res.FromDomain != "" && a.cfg.IsLocalDomain != nil && a.cfg.IsLocalDomain(ctx, res.FromDomain):
		// From outside, yet From: names one of our own domains, and
		// DMARC did not vouch for it: never in INBOX.
		action = "junk"
	}
	a.cfg.Logger.Info("sender authentication", "client", in.Client.IP, "from", in.Sender, "header_from", res.FromDomain,
		"spf", res.SPF.Result, "dkim", dkimSummary(res.DKIM), "dmarc", res.DMARC.Result, "policy", res.Policy,
		"iprev", res.IPRev.Result, "forged_removed", forged, "action", action)
	switch action {
	case "defer":
		a.cfg.Metrics.Count("dmarc", "deferred")
		return &delivery.RejectedError{Check: "dmarc",
			Reason: fmt.Sprintf("the DMARC policy of %s asks for checks that cannot be made right now", res.FromDomain)}
	case "reject":
		a.cfg.Metrics.Count("dmarc", "rejected")
		return &delivery.RejectedError{Check: "dmarc", Permanent: true,
			Reason: fmt.Sprintf("the DMARC policy of %s rejects mail that neither SPF nor DKIM authenticates for it", res.FromDomain)}
	case "junk":
		a.cfg.Metrics.Count("dmarc", "junk")
		for _, acct := range in.Accounts {
			in.Junk(acct)
		}
	}
	return nil
}

func (a *Auth) count(res verify.Result) {
	a.cfg.Metrics.Count("spf", res.SPF.Result)
	if len(res.DKIM) == 0 {
		a.cfg.Metrics.Count("dkim", "none")
	}
	for _, d := range res.DKIM {
		a.cfg.Metrics.Count("dkim", d.Result)
	}
	a.cfg.Metrics.Count("dmarc", res.DMARC.Result)
	a.cfg.Metrics.Count("iprev", res.IPRev.Result)
}

func dkimSummary(ds []verify.DKIMResult) string {
	if len(ds) == 0 {
		return "none"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Result + ":" + d.Domain
	}
	return strings.Join(parts, ",")
}
