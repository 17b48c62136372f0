package outbound

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"time"
)

// TLSMode is the transport security used where neither MTA-STS nor DANE
// asks for more.
type TLSMode string

const (
	// TLSOpportunistic (the default): STARTTLS when the remote offers it,
	// certificate not checked; plain text when it does not, or when the
	// handshake fails (the address is then tried again without TLS).
	TLSOpportunistic TLSMode = "opportunistic"
	// TLSRequire: STARTTLS is required (certificate not checked).
	TLSRequire TLSMode = "require"
	// TLSVerify: STARTTLS with a certificate valid for the MX host name.
	TLSVerify TLSMode = "verify"
	// TLSNone: never STARTTLS (MTA-STS enforce and DANE still require it).
	TLSNone TLSMode = "none"
)

// Config is what a Client needs. Zero values take the defaults given.
type Config struct {
	// Hostname is the name given in EHLO (the node's host name). Required.
	Hostname string
	// Resolver answers every DNS question. Required.
	Resolver Resolver
	// Port is the TCP port dialled at a remote MX (default 25).
	Port int
	// TLS is the default transport security (default TLSOpportunistic).
	TLS TLSMode
	// RootCAs verifies certificates where a policy requires it (MTA-STS
	// HTTPS and MX hosts, TLSVerify, the relay). Nil: the system roots.
	RootCAs *x509.CertPool

	// Relay, "host:port", sends everything through that host instead of
	// the recipients' MX (no MX lookup, no MTA-STS, no DANE). The host is
	// an IP literal or a name resolved through the Resolver.
	Relay string
	// RelayUsername and RelayPassword turn on AUTH PLAIN at the relay. It is
	// sent only over TLS with a verified certificate (STARTTLS, or implicit
	// TLS with RelayImplicitTLS); without them the relay gets opportunistic
	// STARTTLS like any MX.
	RelayUsername, RelayPassword string
	// RelayImplicitTLS: the relay port speaks TLS from the start (465).
	RelayImplicitTLS bool

	// MTASTSPort is the HTTPS port of mta-sts.<domain> (default 443; tests
	// set another). MTASTSTimeout bounds one policy fetch (default 30 s).
	MTASTSPort    int
	MTASTSTimeout time.Duration
	// DisableMTASTS and DisableDANE turn the policies off (both on by
	// default).
	DisableMTASTS, DisableDANE bool

	// MaxPerDestination caps the Sends in progress at once to one
	// destination (a domain, or the relay); more wait (default 4).
	MaxPerDestination int
	// IdleTimeout is how long a connection is kept for the next Send to the
	// same destination (default 5 s; negative: never reused).
	IdleTimeout time.Duration
	// MaxAddresses caps the addresses tried in one Send (default 10).
	MaxAddresses int

	// Timeouts in the spirit of RFC 5321 §4.5.3.2, each temporary when it
	// fires. ConnectTimeout: TCP connect and TLS handshake (default 30 s).
	// GreetingTimeout: the 220 (default 5 min). CommandTimeout: each reply
	// to EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET (default 5 min).
	// DataBlockTimeout: each write of the message (default 3 min).
	// DataEndTimeout: the reply to the final dot (default 10 min).
	ConnectTimeout, GreetingTimeout, CommandTimeout time.Duration
	DataBlockTimeout, DataEndTimeout                time.Duration

	// DialContext dials a remote address (default: net.Dialer). Tests map
	// addresses to loopback listeners with it; a node can bind a source
	// address.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Hostname == "" {
		return c, errors.New("outbound: Config.Hostname is required")
	}
	if c.Resolver == nil {
		return c, errors.New("outbound: Config.Resolver is required")
	}
	if c.Port == 0 {
		c.Port = 25
	}
	switch c.TLS {
	case "":
		c.TLS = TLSOpportunistic
	case TLSOpportunistic, TLSRequire, TLSVerify, TLSNone:
	default:
		return c, errors.New("outbound: unknown TLS mode " + string(c.TLS))
	}
	if c.Relay != "" {
		if _, _, err := net.SplitHostPort(c.Relay); err != nil {
			return c, errors.New("outbound: Relay must be host:port: " + err.Error())
		}
	}
	if (c.RelayUsername != "") != (c.RelayPassword != "") {
		return c, errors.New("outbound: RelayUsername and RelayPassword go together")
	}
	if c.MTASTSPort == 0 {
		c.MTASTSPort = 443
	}
	if c.MTASTSTimeout == 0 {
		c.MTASTSTimeout = 30 * time.Second
	}
	if c.MaxPerDestination <= 0 {
		c.MaxPerDestination = 4
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Second
	}
	if c.MaxAddresses <= 0 {
		c.MaxAddresses = 10
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ConnectTimeout, 30*time.Second)
	def(&c.GreetingTimeout, 5*time.Minute)
	def(&c.CommandTimeout, 5*time.Minute)
	def(&c.DataBlockTimeout, 3*time.Minute)
	def(&c.DataEndTimeout, 10*time.Minute)
	if c.DialContext == nil {
		d := &net.Dialer{}
		c.DialContext = d.DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
