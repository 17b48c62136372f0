package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"strings"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication"
)

// Every reply the server makes on its own account is built here, so the
// wording and codes stay consistent. A refusal carries the metric reason
// alongside the wire reply.

// refusal is an SMTP error reply with the reason it is counted under.
type refusal struct {
	reason string
	reply  *gosmtp.SMTPError
}

func (r *refusal) Error() string { return r.reply.Error() }

func refuse(reason string, code int, enh gosmtp.EnhancedCode, msg string) *refusal {
	return &refusal{reason: reason, reply: &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}}
}

func enh(a, b, c int) gosmtp.EnhancedCode { return gosmtp.EnhancedCode{a, b, c} }

// parseEnhanced reads an RFC 3463 status such as "5.4.6".
func parseEnhanced(s string) (gosmtp.EnhancedCode, bool) {
	var e gosmtp.EnhancedCode
	if n, err := fmt.Sscanf(s, "%d.%d.%d", &e[0], &e[1], &e[2]); n != 3 || err != nil || (e[0] != 4 && e[0] != 5) {
		return e, false
	}
	return e, true
}

// Transaction and session replies.
var (
	replyAuthRequired = refuse("auth_required", 530, enh(5, 7, 0),
		"Authentication required: log in (AUTH) before sending mail on the submission port")
	replyNoAuthOnMX = refuse("auth_unavailable", 502, enh(5, 5, 1),
		"AUTH is not offered on the MX port; submit mail on the submission port (587 or 465)")
	replyEncryptionRequired = refuse("auth_needs_tls", 538, enh(5, 7, 11),
		"Encryption required: issue STARTTLS before AUTH")
	replyAuthFailed = refuse("auth_failed", 535, enh(5, 7, 8),
		"Authentication failed: wrong user name or password")
	replyAuthMalformed = refuse("auth_malformed", 501, enh(5, 5, 2),
		"Malformed AUTH response")
	replyAuthUnavailable = refuse("auth_temporary", 454, enh(4, 7, 0),
		"Temporary authentication failure: the cluster cannot check passwords right now; try again later")
	replyTooManyErrors = refuse("too_many_errors", 421, enh(4, 7, 0),
		"Too many errors on this connection; closing")
	replyTooManyCommands = "421 4.7.0 Too many commands without sending a message; closing\r\n"
	replyTooManyConns    = "421 4.7.0 Too many connections from your address; try again later\r\n"
	replyServerBusy      = "421 4.3.2 Server busy: too many connections; try again later\r\n"

	replyBadSender = refuse("bad_sender", 553, enh(5, 1, 7),
		"Malformed sender address")
	replyNeedUTF8Address = refuse("utf8_address", 553, enh(5, 6, 7),
		"Non-ASCII address: the SMTPUTF8 parameter is required")
	replyBadRecipient = refuse("bad_recipient", 501, enh(5, 1, 3),
		"Malformed recipient address")
	replyNoSuchUser = refuse("no_such_user", 550, enh(5, 1, 1),
		"No such user here")
	replyDisabled = refuse("mailbox_disabled", 550, enh(5, 2, 1),
		"Mailbox disabled: this account does not accept mail")
	replyExternalForward = refuse("outbound_unavailable", 451, enh(4, 3, 5),
		"This address forwards to addresses outside this cluster, and outbound delivery is not configured yet; try again later")
	replyOutboundUnavailable = refuse("outbound_unavailable", 451, enh(4, 3, 5),
		"Outbound delivery is not configured yet: only recipients in this cluster's domains are accepted; the message was not sent")
)

func replyRelayDenied(domain string) *refusal {
	return refuse("relay_denied", 554, enh(5, 7, 1),
		fmt.Sprintf("Relay access denied: %s is not a domain of this server (authenticate on the submission port to send elsewhere)", domain))
}

func replySenderNotOwned(addr string) *refusal {
	return refuse("sender_not_owned", 553, enh(5, 7, 1),
		fmt.Sprintf("Sender address <%s> is not owned by the authenticated user", addr))
}

func replyMailboxFull(permanent bool, addr string) *refusal {
	if permanent {
		return refuse("mailbox_full", 552, enh(5, 2, 2), fmt.Sprintf("Mailbox full: <%s> is over its quota", addr))
	}
	return refuse("mailbox_full", 452, enh(4, 2, 2), fmt.Sprintf("Mailbox full: <%s> is over its quota; try again later", addr))
}

func replyTooLarge(limit int64) *refusal {
	return refuse("too_large", 552, enh(5, 3, 4), fmt.Sprintf("Message too big: the limit is %d bytes", limit))
}

func replyLoginThrottled(retry string) *refusal {
	return refuse("auth_throttled", 454, enh(4, 7, 0),
		"Too many failed logins from your address; try again in "+retry)
}

var (
	replyNoQuorum = refuse("no_quorum", 451, enh(4, 3, 0),
		"Temporary failure: the mail cluster cannot reach a quorum of its nodes, so the message was NOT stored; please retry later")
	replyOutcomeUnknown = refuse("outcome_unknown", 451, enh(4, 3, 0),
		"Temporary failure: the mail cluster lost its majority while storing the message; it may have been stored, so a retry may deliver it twice")
	replyTimeout = refuse("timeout", 451, enh(4, 4, 2),
		"Timeout waiting for message data; the message was not stored")
	replyAborted = refuse("aborted", 451, enh(4, 4, 2),
		"Message transfer aborted; the message was not stored")
	replyInternal = refuse("internal", 451, enh(4, 3, 0),
		"Temporary internal error; the message was not stored, please retry later")
	replyPartial = refuse("partial", 451, enh(4, 2, 0),
		"Temporary failure: some recipients could not take the message; please retry (recipients that got it may see it twice)")
	replyLoginBusy = refuse("login_busy", 454, enh(4, 7, 0),
		"Too many logins being checked; try again in a moment")
	replyShuttingDown = refuse("shutting_down", 421, enh(4, 3, 0),
		"This node is shutting down; try another node or retry later")
)

// lookupReply maps a temporary error of a store read at MAIL or RCPT time.
func lookupReply(err error) *refusal {
	switch {
	case errors.Is(err, replication.ErrNoQuorum):
		return refuse("no_quorum", 451, enh(4, 3, 0),
			"Temporary failure: the mail cluster cannot reach a quorum of its nodes; please retry later")
	case errors.Is(err, context.Canceled):
		return replyShuttingDown
	}
	return refuse("internal", 451, enh(4, 3, 0), "Temporary internal error; please retry later")
}

// decisionReply maps the delivery pipeline's decisions about a message
// (delivery's typed errors) to replies; nil for any other error. addr is
// the address the command was about, if any.
func (s *Server) decisionReply(err error, addr string) *refusal {
	var full *delivery.MailboxFullError
	var rej *delivery.RejectedError
	switch {
	case errors.As(err, &full):
		return replyMailboxFull(s.opts.QuotaPermanent, full.Address)
	case errors.As(err, &rej):
		if rej.Enhanced != "" {
			if e, ok := parseEnhanced(rej.Enhanced); ok {
				code := 554
				if e[0] == 4 {
					code = 451
				}
				return refuse("rejected_"+rej.Check, code, e, "Message refused: "+rej.Reason)
			}
		}
		if rej.Permanent {
			return refuse("rejected_"+rej.Check, 550, enh(5, 7, 1), "Message refused: "+rej.Reason)
		}
		return refuse("rejected_"+rej.Check, 451, enh(4, 7, 1), "Message refused for now: "+rej.Reason+"; try again later")
	case errors.Is(err, delivery.ErrBadSequence):
		return replyBadSequence
	case errors.Is(err, delivery.ErrAuthRequired):
		return replyAuthRequired
	case errors.Is(err, delivery.ErrSenderNotOwned):
		return replySenderNotOwned(addr)
	case errors.Is(err, delivery.ErrBadRecipient):
		return replyBadRecipient
	case errors.Is(err, delivery.ErrRelayDenied):
		return replyRelayDenied(addr[strings.LastIndexByte(addr, '@')+1:])
	case errors.Is(err, delivery.ErrOutboundUnavailable):
		return replyOutboundUnavailable
	case errors.Is(err, delivery.ErrExternalForward):
		return replyExternalForward
	case errors.Is(err, delivery.ErrNoSuchUser):
		return replyNoSuchUser
	case errors.Is(err, delivery.ErrDisabled):
		return replyDisabled
	case errors.Is(err, delivery.ErrPartial):
		return replyPartial
	}
	return nil
}

// envelopeReply maps the outcome of MAIL or RCPT: a decision, or a
// temporary failure.
func (s *Server) envelopeReply(err error, addr string) *refusal {
	if r := s.decisionReply(err, addr); r != nil {
		return r
	}
	return lookupReply(err)
}

// deliveryReply maps the outcome of a delivery attempt to the reply after
// DATA/BDAT. It never returns a 5xx for an internal problem: only the
// client's own data (too large, malformed) or permanent recipient states
// are refused for good. src is the read error of the client's data, if any.
func (s *Server) deliveryReply(err, src error) *refusal {
	var be *bodyError
	var ref *refusal
	switch {
	case errors.As(err, &be):
		return &refusal{reason: be.reason, reply: be.reply}
	case errors.As(err, &ref):
		return ref
	case src != nil:
		return s.sourceReply(src)
	}
	if r := s.decisionReply(err, ""); r != nil {
		return r
	}
	switch {
	case errors.Is(err, replication.ErrTooLarge):
		return replyTooLarge(s.opts.MaxMessageSize)
	case errors.Is(err, replication.ErrQuotaExceeded):
		return replyMailboxFull(false, "a recipient")
	case errors.Is(err, replication.ErrOutcomeUnknown):
		return replyOutcomeUnknown
	case errors.Is(err, replication.ErrNoQuorum):
		return replyNoQuorum
	}
	return replyInternal
}

// sourceReply maps a read error of the client's data.
func (s *Server) sourceReply(src error) *refusal {
	var ne net.Error
	switch {
	case src == gosmtp.ErrDataTooLarge || errors.Is(src, gosmtp.ErrDataTooLarge):
		return replyTooLarge(s.opts.MaxMessageSize)
	case errors.Is(src, gosmtp.ErrTooLongLine):
		return &refusal{reason: "line_too_long", reply: errLineTooLong(s.opts.MaxLineLength).reply}
	case errors.As(src, &ne) && ne.Timeout():
		return replyTimeout
	case errors.Is(src, io.ErrUnexpectedEOF), errors.Is(src, gosmtp.ErrDataReset):
		return replyAborted
	}
	return replyAborted
}
