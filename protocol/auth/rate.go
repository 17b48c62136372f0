package auth

import (
	"net"
	"sync"
	"time"
)

// Rate counts events per client address (IPv6: per /64) in fixed windows
// and says when one went over its limit: connections or messages per
// minute. It is per node: a client spreading over every node gets each
// node's limit. Safe for concurrent use; its memory is bounded.
type Rate struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex
	counts map[string]*windowCount
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
	if ip == nil {
		return true, 0
	}
	return r.AllowKey(networkOf(ip))
}

// AllowKey is Allow for a ClientIP key.
func (r *Rate) AllowKey(key string) (bool, time.Duration) {
	if r == nil || r.limit <= 0 {
		return true, 0
	}
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
