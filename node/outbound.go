package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mailcluster/mailcluster/dispatch"
	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/mailauth/srs"
	"github.com/mailcluster/mailcluster/outbound"
	"github.com/mailcluster/mailcluster/replication/state"
)

// The outbound queue's wiring: every node runs a dispatch.Worker with its
// own SMTP client; the leader advances the queue clock and gives domains
// their DKIM keys (leader.go lists both tasks).

// queueTickEvery is how often the leader advances the queue clock while
// the queue has entries.
const queueTickEvery = time.Second

// startOutbound builds the SMTP client and the worker, and runs the worker
// until ctx ends (the node stops: its attempts are dropped as in a crash).
func (n *Node) startOutbound(ctx context.Context) error {
	cfg := &n.cfg
	if cfg.OutboundOff {
		return nil
	}
	oc := outbound.Config{
		Hostname:          cfg.Hostname,
		Resolver:          resolverAdapter{n.dns},
		Port:              cfg.RemoteSMTPPort,
		TLS:               outbound.TLSMode(cfg.OutboundTLS),
		Relay:             cfg.RelayHost,
		RelayUsername:     cfg.RelayUsername,
		RelayPassword:     cfg.RelayPassword,
		MaxPerDestination: cfg.OutboundMaxPerDestination,
		RootCAs:           cfg.OutboundRootCAs,
		MTASTSPort:        cfg.OutboundMTASTSPort,
		Logger:            n.log.With("part", "outbound"),
	}
	if _, port, err := net.SplitHostPort(cfg.RelayHost); err == nil && port == "465" {
		oc.RelayImplicitTLS = true
	}
	client, err := outbound.New(oc)
	if err != nil {
		return err
	}
	w, err := dispatch.New(dispatch.Config{
		Node:        cfg.NodeID,
		Hostname:    cfg.Hostname,
		Store:       n.store,
		Client:      client,
		Members:     n.liveMemberIDs,
		SRS:         srs.New(cfg.Secret, time.Now),
		Lease:       cfg.OutboundLease,
		Retry:       cfg.OutboundRetry,
		Expiry:      cfg.OutboundExpiry,
		Concurrency: cfg.OutboundConcurrency,
		Registerer:  n.metrics.registry,
		Logger:      n.log.With("part", "dispatch"),
	})
	if err != nil {
		_ = client.Close()
		return err
	}
	n.goLoop(func() {
		defer client.Close()
		w.Run(ctx)
	})
	return nil
}

// liveMemberIDs are the members gossip sees alive, this node included.
func (n *Node) liveMemberIDs() []string {
	ms := n.gossip.members()
	out := make([]string, 0, len(ms)+1)
	self := false
	for _, m := range ms {
		out = append(out, m.ID)
		self = self || m.ID == n.cfg.NodeID
	}
	if !self {
		out = append(out, n.cfg.NodeID)
	}
	return out
}

// queueClockTask (a leader task) advances the queue clock with the
// leader's time: once at once, then about every second while the queue
// has entries. Leases and due times are judged by it alone.
func (n *Node) queueClockTask(ctx context.Context) {
	if n.cfg.OutboundOff {
		return
	}
	tick := time.NewTicker(queueTickEvery)
	defer tick.Stop()
	// New entries are claimable only after a tick that follows them
	// (state's clockReadSince): tick at once when they appear, so mail
	// queued after a quiet spell does not wait for the next second.
	sub := n.store.Feed().SubscribeQueue()
	defer sub.Close()
	first := true
	for {
		if empty, err := n.store.QueueEmpty(ctx); first || (err == nil && !empty) {
			if err := n.store.QueueTick(ctx, time.Now()); err != nil {
				if ctx.Err() != nil {
					return
				}
				n.log.Debug("queue clock tick failed", "err", err)
			} else {
				first = false
			}
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				break wait
			case <-sub.Ready():
				if queueGrew(sub.Next()) {
					break wait
				} // else a tick's own event: wait on
			}
		}
	}
}

// queueGrew reports whether events include new or retried entries.
func queueGrew(events []state.Event, overflow bool) bool {
	if overflow {
		return true
	}
	for _, e := range events {
		if _, ok := e.(state.QueueChanged); ok {
			return true
		}
	}
	return false
}

// dkimKeysTask (a leader task) gives every local domain without an active
// DKIM key a pair, once per leadership (retried until it succeeds).
func (n *Node) dkimKeysTask(ctx context.Context) {
	wait := time.Second
	for {
		got, err := n.store.EnsureDKIMKeys(ctx)
		if err == nil {
			if got > 0 {
				n.log.Info("dkim keys made for domains that had none", "domains", got)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("dkim keys for domains without: will retry", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// resolverAdapter gives the SMTP client the node's resolver: dnsclient's
// records become outbound's, and its errors match outbound's sentinels.
type resolverAdapter struct{ r *dnsclient.Resolver }

func adaptDNSErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dnsclient.ErrNotFound):
		return fmt.Errorf("%w: %w", outbound.ErrNotFound, err)
	case errors.Is(err, dnsclient.ErrTemporary):
		return fmt.Errorf("%w: %w", outbound.ErrTemporary, err)
	}
	return err
}

func (a resolverAdapter) LookupMX(ctx context.Context, domain string) ([]outbound.MX, error) {
	mxs, err := a.r.LookupMX(ctx, domain)
	if err != nil {
		return nil, adaptDNSErr(err)
	}
	out := make([]outbound.MX, len(mxs))
	for i, m := range mxs {
		out[i] = outbound.MX{Host: m.Host, Pref: m.Pref}
	}
	return out, nil
}

func (a resolverAdapter) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	ips, err := a.r.LookupIP(ctx, host)
	return ips, adaptDNSErr(err)
}

func (a resolverAdapter) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, err := a.r.LookupTXT(ctx, name)
	return txt, adaptDNSErr(err)
}

func (a resolverAdapter) LookupTLSA(ctx context.Context, name string) ([]outbound.TLSA, bool, error) {
	recs, authentic, err := a.r.LookupTLSA(ctx, name)
	if err != nil {
		return nil, false, adaptDNSErr(err)
	}
	out := make([]outbound.TLSA, len(recs))
	for i, t := range recs {
		out[i] = outbound.TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: t.Data}
	}
	return out, authentic, nil
}
