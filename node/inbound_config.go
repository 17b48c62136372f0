package node

import (
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/inbound"
	"github.com/mailcluster/mailcluster/mailauth/dnsbl"
)

// InboundConfig is how mail from other servers is judged before it is
// stored. The zero value is the default: sender authentication and the
// spam filter on, no blocklists, no greylisting.
type InboundConfig struct {
	// AuthServID names this cluster in Authentication-Results fields
	// (default: Hostname). Give every node the same one: a field claiming
	// it that arrives from outside is removed.
	AuthServID string
	// SenderAuthOff skips SPF, DKIM, DMARC and iprev (no
	// Authentication-Results field, no DMARC policy).
	SenderAuthOff bool
	// DMARCReject is what a DMARC failure under p=reject gets: "reject"
	// (default, 550 5.7.1) or "junk".
	DMARCReject string
	// DNSBLZones are the blocklists asked about every client (none by
	// default); a listed client gets 550 5.7.1 at MAIL FROM.
	DNSBLZones []string
	// Greylisting refuses a new (client network, sender, recipient)
	// triplet once with 451 4.7.1; GreylistDelay is how long (default
	// 5 minutes).
	Greylisting   bool
	GreylistDelay time.Duration
	// SpamFilterOff turns the spam filter off. SpamThreshold is the
	// score (0..1) from which mail goes to Junk (default 0.9).
	SpamFilterOff bool
	SpamThreshold float64
}

func (c *InboundConfig) validate(hostname string) error {
	if c.AuthServID == "" {
		c.AuthServID = hostname
	}
	switch c.DMARCReject {
	case "":
		c.DMARCReject = inbound.RejectRefuses
	case inbound.RejectRefuses, inbound.RejectJunks:
	default:
		return fmt.Errorf("dmarc_reject %q: want %q or %q", c.DMARCReject, inbound.RejectRefuses, inbound.RejectJunks)
	}
	for _, z := range c.DNSBLZones {
		if err := dnsbl.ValidZone(z); err != nil {
			return fmt.Errorf("dnsbl_zones %q: %w", z, err)
		}
	}
	if c.GreylistDelay < 0 {
		return fmt.Errorf("greylist_delay must not be negative")
	}
	if c.SpamThreshold == 0 {
		c.SpamThreshold = 0.9
	}
	if c.SpamThreshold < 0 || c.SpamThreshold > 1 {
		return fmt.Errorf("spam_threshold %v: want a score between 0 and 1", c.SpamThreshold)
	}
	return nil
}
