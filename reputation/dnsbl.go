package reputation

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/mailauth/dnsbl"
)

// Blocklists refuses mail, at MAIL FROM, from a client whose address one
// of the configured DNS blocklists lists. A list that does not answer
// counts as not listing (logged): an outage of a list must not stop mail.
type Blocklists struct {
	resolver dnsbl.Resolver
	zones    []string
	log      *slog.Logger
	listed   func(zone string) // counts a hit (metrics); may be nil
}

// NewBlocklists checks zones and builds the check.
func NewBlocklists(r dnsbl.Resolver, zones []string, log *slog.Logger, listed func(zone string)) (*Blocklists, error) {
	for _, z := range zones {
		if err := dnsbl.ValidZone(z); err != nil {
			return nil, fmt.Errorf("dnsbl zone %q: %w", z, err)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Blocklists{resolver: r, zones: zones, log: log, listed: listed}, nil
}

// Name is "dnsbl".
func (b *Blocklists) Name() string { return "dnsbl" }

// CheckSender looks the client up in every zone.
func (b *Blocklists) CheckSender(ctx context.Context, env delivery.Envelope) error {
	if env.Client.IP == nil || len(b.zones) == 0 {
		return nil
	}
	l, listed, err := dnsbl.Check(ctx, b.resolver, env.Client.IP, b.zones)
	switch {
	case listed:
		if b.listed != nil {
			b.listed(l.Zone)
		}
		reason := fmt.Sprintf("client [%s] is blocked using %s", env.Client.IP, l.Zone)
		if l.Reason != "" {
			reason += ": " + l.Reason
		}
		return &delivery.RejectedError{Check: b.Name(), Permanent: true, Reason: reason}
	case err != nil:
		b.log.Warn("a DNS blocklist did not answer; the client is not judged by it", "client", env.Client.IP, "err", err)
	}
	return nil
}

// CheckRecipient passes: a listing is about the client.
func (b *Blocklists) CheckRecipient(context.Context, delivery.Envelope, string) error { return nil }
