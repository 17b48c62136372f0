package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/inbound"
	"github.com/mailcluster/mailcluster/mailauth/verify"
	"github.com/mailcluster/mailcluster/reputation"
)

// pipeline builds the node's one delivery pipeline, with the checks on
// mail from other servers the configuration asks for.
func (n *Node) pipeline() (*delivery.Pipeline, error) {
	cfg := n.cfg.Inbound
	metrics, err := inbound.NewMetrics(n.metrics.registry)
	if err != nil {
		return nil, err
	}
	log := n.log.With("part", "inbound")
	var inspectors []delivery.Inspector
	if !cfg.SenderAuthOff {
		a, err := inbound.NewAuth(inbound.AuthConfig{
			Checker:    verify.New(verify.Config{Resolver: n.dns, MaxMessageBytes: n.cfg.MaxMessageSize}),
			AuthServID: cfg.AuthServID, OnReject: cfg.DMARCReject,
			IsLocalDomain: n.store.IsLocalDomain, Metrics: metrics, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		inspectors = append(inspectors, a)
	}
	if !cfg.SpamFilterOff {
		s, err := inbound.NewSpam(inbound.SpamConfig{Counts: n.store.SpamCounts(), Threshold: cfg.SpamThreshold, Metrics: metrics, Logger: log})
		if err != nil {
			return nil, err
		}
		inspectors = append(inspectors, s)
	}
	replies := &replySubmitter{}
	inspectors = append(inspectors, inbound.NewSieve(inbound.SieveConfig{
		Store: n.store, Submitter: replies, Hostname: n.cfg.Hostname, Metrics: metrics, Logger: log,
	}))
	var envelope []delivery.EnvelopeCheck
	if len(cfg.DNSBLZones) > 0 {
		b, err := reputation.NewBlocklists(n.dns, cfg.DNSBLZones, log, func(zone string) { metrics.Count("dnsbl", "listed") })
		if err != nil {
			return nil, err
		}
		envelope = append(envelope, b)
	}
	if cfg.Greylisting {
		envelope = append(envelope, countingCheck{reputation.NewGreylist(n.store, reputation.GreylistConfig{Delay: cfg.GreylistDelay}), metrics})
	}
	p := delivery.New(delivery.Config{
		Store: n.store, Outbound: n.outboundRouting(), Inspectors: inspectors, EnvelopeChecks: envelope,
		SpoolDir: filepath.Join(n.cfg.DataDir, "spool"), Logger: n.log.With("part", "delivery"),
	})
	replies.pipeline = p
	return p, nil
}

// countingCheck counts an envelope check's refusals as verdicts.
type countingCheck struct {
	delivery.EnvelopeCheck
	metrics *inbound.Metrics
}

func (c countingCheck) CheckSender(ctx context.Context, env delivery.Envelope) error {
	err := c.EnvelopeCheck.CheckSender(ctx, env)
	if err != nil {
		c.metrics.Count(c.Name(), "refused")
	}
	return err
}

func (c countingCheck) CheckRecipient(ctx context.Context, env delivery.Envelope, addr string) error {
	err := c.EnvelopeCheck.CheckRecipient(ctx, env, addr)
	if err != nil {
		c.metrics.Count(c.Name(), "refused")
	}
	return err
}

// prepareSpool empties the folder of messages being inspected: whatever
// a crash left there was never acknowledged.
func prepareSpool(dataDir string) error {
	dir := filepath.Join(dataDir, "spool")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return os.MkdirAll(dir, 0o700)
}
