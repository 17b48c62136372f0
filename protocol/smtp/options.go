package smtp

import "time"

// Options are the SMTP limits and settings an administrator can change. The
// zero value of every field means its default (see withDefaults).
type Options struct {
	// MaxMessageSize is the largest message accepted (bytes), advertised in
	// EHLO SIZE. 0: the store's limit less TraceReserve, so that the
	// Received and Return-Path headers added here always fit.
	MaxMessageSize int64
	// MaxRecipients is the most RCPT TO one message may have. Default 100
	// (the minimum RFC 5321 asks servers to accept).
	MaxRecipients int
	// MaxLineLength is the longest line accepted, CRLF included, in commands
	// and in message data. RFC 5322 allows 1000; real mail sometimes has
	// longer lines, so the default is 16384.
	MaxLineLength int
	// MaxConnections bounds simultaneous SMTP connections on this node (all
	// three listeners together). Default 1000.
	MaxConnections int
	// MaxConnectionsPerIP bounds simultaneous connections from one client
	// address (IPv6: one /64). Default 50.
	MaxConnectionsPerIP int
	// ConnectionRatePerIP bounds the connections one client address (IPv6:
	// one /64) may open per minute, all SMTP ports together; more get 421.
	// 0: no limit. Counted per node.
	ConnectionRatePerIP int
	// MessageRatePerIP bounds the messages one client address may start
	// per minute on the MX port; more get 451 4.7.1 at MAIL FROM. 0: no
	// limit. Counted per node.
	MessageRatePerIP int
	// MaxCommandsBeforeMail bounds the commands a client may send outside a
	// mail transaction (EHLO, NOOP, RSET, VRFY, AUTH lines, refused MAIL…)
	// before it must send a message. The count restarts after each message.
	// Default 50.
	MaxCommandsBeforeMail int
	// MaxErrors is how many refused commands (unknown recipients, failed
	// logins, refused senders, malformed messages) a connection may collect
	// before it is closed with 421. Default 20.
	MaxErrors int

	// CommandTimeout is how long a client may take to send one command
	// line. Default 5m (RFC 5321 §4.5.3.2.7).
	CommandTimeout time.Duration
	// DataTimeout is how long message data may stall: it is an inactivity
	// timeout, refreshed by every byte received, so a slow but live upload
	// is never cut. Default 5m.
	DataTimeout time.Duration
	// WriteTimeout bounds writing one reply. Default 1m.
	WriteTimeout time.Duration
	// DeliveryTimeout is how long, after the last byte of a message, the
	// cluster may take to make it durable before the client gets 451.
	// Default 60s.
	DeliveryTimeout time.Duration
	// ShutdownGrace is how long a stopping node lets the deliveries under
	// way finish, so that a message already being committed gets its 250
	// instead of a temporary failure its sender would retry. Default 10s.
	ShutdownGrace time.Duration

	// QuotaPermanent answers "mailbox full" with 552 5.2.2 (the sender
	// bounces at once) instead of the default 452 4.2.2 (the sender retries,
	// and the message gets in if the user frees space in time).
	QuotaPermanent bool
	// Allow8BitHeaders accepts raw 8-bit bytes in message headers from
	// clients that did not announce SMTPUTF8 (legacy mailers); by default
	// such messages are refused with 554 5.6.7.
	Allow8BitHeaders bool
	// FixBareLineEndings turns a bare LF or bare CR in message data into
	// CRLF instead of refusing the message (554 5.6.0, the default).
	// Either way a bare LF never ends DATA (no SMTP smuggling).
	FixBareLineEndings bool
}

// TraceReserve is the room kept between the store's size limit and the
// default SMTP limit, for the Received and Return-Path headers.
const TraceReserve = 4 << 10

func (o Options) withDefaults(storeMax int64) Options {
	if o.MaxMessageSize <= 0 || o.MaxMessageSize > storeMax-TraceReserve {
		o.MaxMessageSize = storeMax - TraceReserve
	}
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&o.MaxRecipients, 100)
	setInt(&o.MaxLineLength, 16384)
	setInt(&o.MaxConnections, 1000)
	setInt(&o.MaxConnectionsPerIP, 50)
	setInt(&o.MaxCommandsBeforeMail, 50)
	setInt(&o.MaxErrors, 20)
	if o.MaxLineLength < 1000 {
		o.MaxLineLength = 1000 // RFC 5321 §4.5.3.1.6: never below 1000
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setDur(&o.CommandTimeout, 5*time.Minute)
	setDur(&o.DataTimeout, 5*time.Minute)
	setDur(&o.WriteTimeout, time.Minute)
	setDur(&o.DeliveryTimeout, time.Minute)
	setDur(&o.ShutdownGrace, 10*time.Second)
	return o
}
