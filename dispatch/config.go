package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/mailauth/srs"
	"github.com/mailcluster/mailcluster/outbound"
	"github.com/mailcluster/mailcluster/replication"
)

// Sender is the SMTP client (outbound.Client).
type Sender interface {
	Send(ctx context.Context, domain string, m outbound.Message, beforeCommit func() error) []outbound.Result
}

// DefaultRetry is the retry schedule: the wait after the 1st, 2nd, …
// failed attempt; the last step repeats.
var defaultRetry = []time.Duration{
	2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
}

// DefaultRetry returns the default retry schedule (2m,5m,10m,15m,30m,1h,2h).
func DefaultRetry() []time.Duration { return append([]time.Duration(nil), defaultRetry...) }

// ParseRetry reads a retry schedule like "2m,5m,1h".
func ParseRetry(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		d, err := time.ParseDuration(part)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("retry schedule %q: %q is not a positive duration like 5m", s, part)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("retry schedule %q: no steps", s)
	}
	return out, nil
}

// Config is what a Worker needs.
type Config struct {
	// Node is this node's ID (the lease holder's name). Required.
	Node string
	// Hostname is this node's host name: the DSNs' Reporting-MTA and
	// From MAILER-DAEMON@Hostname. Required.
	Hostname string
	// Store is the replicated store. Required.
	Store *replication.Store
	// Client sends the messages. Required.
	Client Sender
	// Members returns the IDs of the live members (this node included):
	// the nodes the due entries are spread over. Nil: this node alone.
	Members func() []string
	// SRS reverses SRS envelope senders when a DSN must go back to one
	// (nil: such a DSN goes to the SRS address as it is).
	SRS *srs.Rewriter

	// Lease is how long a claim holds before it must be renewed
	// (default 10 s); renewals go every Lease/3.
	Lease time.Duration
	// Retry is the wait after each failed attempt (default
	// DefaultRetry()); the last step repeats.
	Retry []time.Duration
	// Expiry is the lifetime given to the queue entry of a DSN for a
	// sender outside the cluster (default 5 days).
	Expiry time.Duration
	// Concurrency caps the Sends in progress on this node (default 32).
	Concurrency int
	// Poll is how often the worker looks at the queue without an event
	// (default 1 s).
	Poll time.Duration
	// Steal is how long an entry may stay due (by the queue clock) before
	// any node claims it, not only the one it hashes to (default 3 s).
	Steal time.Duration

	// Registerer receives the worker's metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger (default: discarded).
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Node == "":
		return c, errors.New("dispatch: Config.Node is required")
	case c.Hostname == "":
		return c, errors.New("dispatch: Config.Hostname is required")
	case c.Store == nil:
		return c, errors.New("dispatch: Config.Store is required")
	case c.Client == nil:
		return c, errors.New("dispatch: Config.Client is required")
	}
	if c.Lease <= 0 {
		c.Lease = 10 * time.Second
	}
	if len(c.Retry) == 0 {
		c.Retry = DefaultRetry()
	}
	for _, d := range c.Retry {
		if d <= 0 {
			return c, errors.New("dispatch: every retry step must be positive")
		}
	}
	if c.Expiry <= 0 {
		c.Expiry = 5 * 24 * time.Hour
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Steal <= 0 {
		c.Steal = 3 * time.Second
	}
	if c.Members == nil {
		self := c.Node
		c.Members = func() []string { return []string{self} }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
