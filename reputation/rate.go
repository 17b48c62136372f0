package reputation

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/delivery"
)

// Rate counts events per client network in fixed windows and says when a
// network went over its limit. It is per node: a sender spreading over
// every MX node gets each node's limit.
type Rate struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	counts  map[string]*windowCount
}

type windowCount struct {
	start time.Time
	n     int
}

// maxTracked bounds the networks a Rate remembers; past it, the counts of
// networks quiet for a whole window are dropped, and if that is not
// enough every count is.
const maxTracked = 100_000

// NewRate allows limit events per window per network (limit 0: no limit).
func NewRate(limit int, window time.Duration, now func() time.Time) *Rate {
	if now == nil {
		now = time.Now
	}
	return &Rate{limit: limit, window: window, now: now, counts: make(map[string]*windowCount)}
}

// Allow counts one event for ip and reports whether it is within the
// limit, and if not, how long until the window ends.
func (r *Rate) Allow(ip net.IP) (bool, time.Duration) {
	if r == nil || r.limit <= 0 || ip == nil {
		return true, 0
	}
	key := networkOf(ip)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.counts[key]
	if c == nil || now.Sub(c.start) >= r.window {
		if c == nil && len(r.counts) >= maxTracked {
			r.sweep(now)
		}
		c = &windowCount{start: now}
		r.counts[key] = c
	}
	c.n++
	if c.n > r.limit {
		return false, r.window - now.Sub(c.start)
	}
	return true, 0
}

func (r *Rate) sweep(now time.Time) {
	for k, c := range r.counts {
		if now.Sub(c.start) >= r.window {
			delete(r.counts, k)
		}
	}
	if len(r.counts) >= maxTracked {
		clear(r.counts)
	}
}

// networkOf is the address itself for IPv4, the /64 for IPv6 (one host
// often holds a whole /64).
func networkOf(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String()
}

// MessageRate refuses messages from a client over its per-window limit
// with 451 4.7.1, at MAIL FROM.
type MessageRate struct{ rate *Rate }

// NewMessageRate allows limit messages per window per client (0: no limit).
func NewMessageRate(limit int, window time.Duration) *MessageRate {
	return &MessageRate{rate: NewRate(limit, window, nil)}
}

// Name is "rate".
func (m *MessageRate) Name() string { return "rate" }

// CheckSender counts the message.
func (m *MessageRate) CheckSender(_ context.Context, env delivery.Envelope) error {
	if ok, wait := m.rate.Allow(env.Client.IP); !ok {
		return &delivery.RejectedError{Check: m.Name(), Enhanced: "4.7.1",
			Reason: fmt.Sprintf("too many messages from your address, try again in %d seconds", int(wait.Seconds())+1)}
	}
	return nil
}

// CheckRecipient passes.
func (m *MessageRate) CheckRecipient(context.Context, delivery.Envelope, string) error { return nil }
