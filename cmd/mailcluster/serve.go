package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/dispatch"
	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/imap"
	"github.com/mailcluster/mailcluster/protocol/pop3"
	"github.com/mailcluster/mailcluster/protocol/smtp"
)

// cmdServe runs one node until SIGINT/SIGTERM, a graceful leave, or a
// fatal error.
func cmdServe(args []string, stdout, stderr io.Writer) error {
	s, err := loadSettings(args, os.LookupEnv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger, err := newLogger(stderr, s.LogFormat, s.LogLevel)
	if err != nil {
		return err
	}
	cfg, err := nodeConfig(s, logger)
	if err != nil {
		return err
	}
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		logger.Info("shutting down", "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return n.Shutdown(ctx)
	case <-n.Done():
		if n.Left() {
			fmt.Fprintf(stdout, "node %s left the cluster\n", n.ID())
			return nil
		}
		return n.Err()
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log_level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log_format %q: want text or json", format)
}

// nodeConfig turns user settings into the node's Go configuration.
func nodeConfig(s settings, logger *slog.Logger) (node.Config, error) {
	profile, err := node.ProfileByName(s.Profile)
	if err != nil {
		return node.Config{}, err
	}
	override := func(dst *time.Duration, d duration) {
		if d > 0 {
			*dst = time.Duration(d)
		}
	}
	override(&profile.Raft.HeartbeatTimeout, s.RaftHeartbeat)
	override(&profile.Raft.ElectionTimeout, s.RaftElection)
	override(&profile.Raft.LeaderLeaseTimeout, s.RaftLeaderLease)
	if s.Secret == "" {
		return node.Config{}, errors.New("no cluster secret: set secret_file, secret or MAILCLUSTER_SECRET (the same on every node)")
	}
	if len(s.Secret) < 16 {
		return node.Config{}, errors.New("the cluster secret is too short: use at least 16 characters (mailcluster dev generates 44)")
	}
	maxSize, err := parseSize(s.MaxMessageSize)
	if err != nil {
		return node.Config{}, fmt.Errorf("max_message_size: %w", err)
	}
	if s.MaxMailboxes < 0 {
		return node.Config{}, errors.New("max_mailboxes_per_account must be 0 (no limit) or more")
	}
	smtpMax, err := parseSize(s.SMTPMaxMessageSize)
	if err != nil {
		return node.Config{}, fmt.Errorf("smtp_max_message_size: %w", err)
	}
	smtpOpts := smtp.Options{
		MaxMessageSize:        smtpMax,
		MaxRecipients:         s.SMTPMaxRecipients,
		MaxLineLength:         s.SMTPMaxLineLength,
		MaxConnections:        s.SMTPMaxConnections,
		MaxConnectionsPerIP:   s.SMTPMaxConnectionsPerIP,
		MaxCommandsBeforeMail: s.SMTPMaxCommandsBeforeMail,
		MaxErrors:             s.SMTPMaxErrors,
		CommandTimeout:        time.Duration(s.SMTPCommandTimeout),
		DataTimeout:           time.Duration(s.SMTPDataTimeout),
		WriteTimeout:          time.Duration(s.SMTPWriteTimeout),
		DeliveryTimeout:       time.Duration(s.SMTPDeliveryTimeout),
		ShutdownGrace:         time.Duration(s.SMTPShutdownGrace),
		QuotaPermanent:        s.SMTPQuotaPermanent,
		Allow8BitHeaders:      s.SMTPAllow8BitHeaders,
		FixBareLineEndings:    s.SMTPFixBareLineEndings,
		ConnectionRatePerIP:   s.SMTPConnectionRatePerIP,
		MessageRatePerIP:      s.SMTPMessageRatePerIP,
	}
	imapOpts, err := imapOptions(s)
	if err != nil {
		return node.Config{}, err
	}
	tlsConfig, err := loadTLS(s.TLSCert, s.TLSKey)
	if err != nil {
		return node.Config{}, err
	}
	dnsServers := s.DNSServers
	if len(dnsServers) == 0 {
		// The one place the system's resolver configuration is read.
		if dnsServers, err = dnsclient.SystemServers(); err != nil {
			return node.Config{}, fmt.Errorf("dns_servers is not set and %v: set dns_servers", err)
		}
	}
	spamThreshold, err := strconv.ParseFloat(strings.TrimSpace(s.SpamThreshold), 64)
	if err != nil || spamThreshold <= 0 || spamThreshold > 1 {
		return node.Config{}, fmt.Errorf("spam_threshold %q: want a score above 0 and at most 1", s.SpamThreshold)
	}
	retry, err := dispatch.ParseRetry(s.OutboundRetry)
	if err != nil {
		return node.Config{}, fmt.Errorf("outbound_retry: %w", err)
	}
	delayDSN := time.Duration(s.OutboundDelayDSN)
	if delayDSN == 0 {
		delayDSN = -1 // 0 in the file means never; node's zero value is the default
	}
	return node.Config{
		NodeID:            s.NodeID,
		Zone:              s.Zone,
		DataDir:           s.DataDir,
		Secret:            []byte(s.Secret),
		GossipAddr:        s.GossipAddr,
		GossipAdvertise:   s.GossipAdvertise,
		ClusterAddr:       s.ClusterAddr,
		ClusterAdvertise:  s.ClusterAdvertise,
		HTTPAddr:          s.HTTPAddr,
		AdminToken:        s.AdminToken,
		Join:              s.Join,
		BootstrapExpect:   s.BootstrapExpect,
		Profile:           profile,
		ProposeTimeout:    time.Duration(s.ProposeTimeout),
		DeadServerTimeout: time.Duration(s.DeadServerTimeout),
		SnapshotThreshold: s.SnapshotThreshold,
		SnapshotInterval:  time.Duration(s.SnapshotInterval),
		TrailingLogs:      s.TrailingLogs,
		Replicas:          s.Replicas,
		MaxMessageSize:    maxSize,
		Hostname:          s.Hostname,
		TLS:               tlsConfig,
		SMTPAddr:          s.SMTPAddr,
		SubmissionAddr:    s.SubmissionAddr,
		SubmissionsAddr:   s.SubmissionsAddr,
		IMAPAddr:          s.IMAPAddr,
		IMAPSAddr:         s.IMAPSAddr,
		POP3Addr:          s.POP3Addr,
		POP3SAddr:         s.POP3SAddr,
		SMTP:              smtpOpts,
		IMAP:              imapOpts,
		POP3: pop3.Options{
			IdleTimeout:         time.Duration(s.POP3IdleTimeout),
			HandshakeTimeout:    time.Duration(s.POP3HandshakeTimeout),
			LeaveUnseen:         s.POP3LeaveUnseen,
			MaxLineLength:       s.POP3MaxLineLength,
			MaxConnections:      s.POP3MaxConnections,
			MaxConnectionsPerIP: s.POP3MaxConnectionsPerIP,
			MaxAuthFailures:     s.POP3MaxAuthFailures,
			MaxBadCommands:      s.POP3MaxBadCommands,
		},
		AuthLimits: auth.LimiterOptions{
			IPFailures:      s.AuthIPFailures,
			AccountFailures: s.AuthAccountFailures,
			Window:          time.Duration(s.AuthWindow),
			Block:           time.Duration(s.AuthBlock),
			FailDelay:       time.Duration(s.AuthFailDelay),

			MaxConcurrentChecks: s.AuthMaxChecks,
		},
		ManageSieveAddr: s.ManageSieveAddr,
		Inbound: node.InboundConfig{
			AuthServID: s.AuthServID, SenderAuthOff: !s.SenderAuth, DMARCReject: s.DMARCReject,
			DNSBLZones: s.DNSBLZones, Greylisting: s.Greylisting, GreylistDelay: time.Duration(s.GreylistDelay),
			SpamFilterOff: !s.SpamFilter, SpamThreshold: spamThreshold,
		},
		TLSHandshakeTimeout: time.Duration(s.TLSHandshakeTimeout),
		DNSServers:          dnsServers,
		DNSCacheSize:        s.DNSCacheSize,
		RemoteSMTPPort:      s.RemoteSMTPPort,
		Logger:              logger,

		OutboundRetry:             retry,
		OutboundExpiry:            time.Duration(s.OutboundExpiry),
		OutboundDelayDSN:          delayDSN,
		OutboundLease:             time.Duration(s.OutboundLease),
		OutboundConcurrency:       s.OutboundConcurrency,
		OutboundMaxPerDestination: s.OutboundMaxPerDestination,
		OutboundTLS:               s.OutboundTLS,
		RelayHost:                 s.RelayHost,
		RelayUsername:             s.RelayUsername,
		RelayPassword:             s.RelayPassword,

		// 0 in the file means no limit; node's zero value is the default.
		MaxMailboxesPerAccount: cmp.Or(s.MaxMailboxes, -1),
	}, nil
}

// imapOptions reads the imap_* keys.
func imapOptions(s settings) (imap.Options, error) {
	o := imap.Options{
		MaxConnections:      s.IMAPMaxConnections,
		MaxConnectionsPerIP: s.IMAPMaxConnectionsPerIP,
		ShutdownGrace:       time.Duration(s.IMAPShutdownGrace),
		LoginIdleTimeout:    time.Duration(s.IMAPLoginIdleTimeout),
	}
	var err error
	if o.MaxMessageSize, err = parseSize(s.IMAPMaxMessageSize); err != nil {
		return o, fmt.Errorf("imap_max_message_size: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(s.IMAPBodyCache)) {
	case "":
	case "off", "-1":
		o.BodyCacheBytes = -1
	default:
		if o.BodyCacheBytes, err = parseSize(s.IMAPBodyCache); err != nil {
			return o, fmt.Errorf("imap_body_cache: %w", err)
		}
	}
	return o, nil
}
