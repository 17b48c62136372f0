package reputation

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication/state"
)

// GreylistStore is the replicated state greylisting keeps its triplets in;
// *replication.Store has it.
type GreylistStore interface {
	Greylist(ctx context.Context, key []byte, maxAge time.Duration) (state.GreylistEntry, bool, error)
	RecordGreylist(ctx context.Context, key []byte, pass bool, maxAge time.Duration) error
}

// GreylistConfig is how greylisting behaves; zero fields take defaults.
type GreylistConfig struct {
	// Delay is how long a new triplet is refused (default 5 minutes).
	Delay time.Duration
	// Window is how long after its first attempt a retry is still
	// accepted; later, the triplet starts over (default 24 hours).
	Window time.Duration
	// Remember is how long a triplet that got through is let through at
	// once (default 35 days since its last message).
	Remember time.Duration
	Now      func() time.Time
}

// Greylist refuses, once, a message from a (client network, sender,
// recipient) triplet the cluster has not seen before: a real MTA retries
// after Delay, much spamware does not. The network is the /24 for IPv4 and
// the /64 for IPv6, so a sender's pool of outgoing servers counts as one.
type Greylist struct {
	store GreylistStore
	cfg   GreylistConfig
}

// NewGreylist builds the check.
func NewGreylist(store GreylistStore, cfg GreylistConfig) *Greylist {
	if cfg.Delay <= 0 {
		cfg.Delay = 5 * time.Minute
	}
	if cfg.Window <= 0 {
		cfg.Window = 24 * time.Hour
	}
	if cfg.Remember <= 0 {
		cfg.Remember = 35 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Greylist{store: store, cfg: cfg}
}

// Name is "greylist".
func (g *Greylist) Name() string { return "greylist" }

// CheckSender passes: greylisting judges each recipient.
func (g *Greylist) CheckSender(context.Context, delivery.Envelope) error { return nil }

// refreshPassAfter is how stale a triplet's last pass may get before a
// message records a new one (one Raft write a day per triplet at most).
const refreshPassAfter = 24 * time.Hour

// CheckRecipient refuses a triplet's first attempt and retries that come
// sooner than Delay after it.
func (g *Greylist) CheckRecipient(ctx context.Context, env delivery.Envelope, address string) error {
	if env.Client.IP == nil {
		return nil
	}
	key := tripletKey(env.Client.IP, env.Sender, address)
	maxAge := max(g.cfg.Remember, g.cfg.Window)
	e, ok, err := g.store.Greylist(ctx, key, maxAge)
	if err != nil {
		return g.tryLater("the greylist cannot be read right now")
	}
	now := g.cfg.Now()
	switch {
	case ok && e.Passed != 0:
		if now.Sub(time.Unix(0, e.Passed)) > refreshPassAfter {
			_ = g.store.RecordGreylist(ctx, key, true, maxAge) // a failure costs a refresh, not the message
		}
		return nil
	case ok && now.Sub(time.Unix(0, e.First)) < g.cfg.Delay:
		wait := g.cfg.Delay - now.Sub(time.Unix(0, e.First))
		return g.tryLater(fmt.Sprintf("greylisted, please try again in %d seconds", int(wait.Seconds())+1))
	case ok && now.Sub(time.Unix(0, e.First)) <= g.cfg.Window:
		if err := g.store.RecordGreylist(ctx, key, true, maxAge); err != nil {
			return g.tryLater("the greylist cannot be written right now")
		}
		return nil
	}
	// New, or its retry came too late: it starts over.
	if err := g.store.RecordGreylist(ctx, key, false, maxAge); err != nil {
		return g.tryLater("the greylist cannot be written right now")
	}
	return g.tryLater(fmt.Sprintf("greylisted, please try again in %d seconds", int(g.cfg.Delay.Seconds())))
}

func (g *Greylist) tryLater(reason string) error {
	return &delivery.RejectedError{Check: g.Name(), Reason: reason, Enhanced: "4.7.1"}
}

// tripletKey hashes the client's network, the sender and the recipient.
func tripletKey(ip net.IP, sender, rcpt string) []byte {
	var network string
	if v4 := ip.To4(); v4 != nil {
		network = v4.Mask(net.CIDRMask(24, 32)).String()
	} else {
		network = ip.Mask(net.CIDRMask(64, 128)).String()
	}
	if sender == "" {
		sender = "<>"
	}
	sum := sha256.Sum256([]byte(network + "\x00" + strings.ToLower(sender) + "\x00" + strings.ToLower(rcpt)))
	return sum[:16]
}
