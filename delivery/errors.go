package delivery

import (
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/replication"
)

// Decisions about a message. Any other error a method returns comes from
// the store (replication's typed errors match through errors.Is) and is
// temporary unless replication says otherwise.
var (
	// ErrBadSequence: a method called out of order (no recipient before
	// Body, Commit before Body, anything after Commit or Abort).
	ErrBadSequence = errors.New("delivery: called out of order")
	// ErrAuthRequired: a submission or APPEND without an account.
	ErrAuthRequired = errors.New("delivery: an account is required")
	// ErrSenderNotOwned: the authenticated account may not send as this
	// address.
	ErrSenderNotOwned = errors.New("delivery: sender address not owned by the account")
	// ErrBadRecipient: the recipient address is malformed.
	ErrBadRecipient = errors.New("delivery: malformed recipient address")
	// ErrRelayDenied: mail from another server for a domain that is not
	// this cluster's.
	ErrRelayDenied = errors.New("delivery: not a local domain")
	// ErrOutboundUnavailable: an authenticated sender wrote to a domain
	// outside the cluster, and this pipeline has no outbound queue
	// (Config.Outbound nil). Temporary.
	ErrOutboundUnavailable = errors.New("delivery: outbound delivery is not available")
	// ErrExternalForward: the address forwards outside the cluster and
	// this pipeline has no outbound queue. Temporary.
	ErrExternalForward = errors.New("delivery: address forwards outside the cluster")
	// ErrNoSuchUser: no account or alias takes this address.
	ErrNoSuchUser = errors.New("delivery: no such user")
	// ErrDisabled: every account behind the address is disabled.
	ErrDisabled = errors.New("delivery: mailbox disabled")
	// ErrMailboxFull: matched by every *MailboxFullError.
	ErrMailboxFull = errors.New("delivery: mailbox full")
	// ErrPartial: the commit stored the message for some recipients and
	// not for others; the sender should retry (the ones who got it may
	// get it twice, which beats losing it for the others). Temporary.
	ErrPartial = errors.New("delivery: stored for some recipients only")
	// ErrRejected: matched by every *RejectedError.
	ErrRejected = errors.New("delivery: refused by a check")
)

// MailboxFullError is a recipient whose quota the message does not fit.
// It also matches replication.ErrQuotaExceeded.
type MailboxFullError struct {
	Address string // the address as given, or the account
}

func (e *MailboxFullError) Error() string {
	return fmt.Sprintf("delivery: mailbox of %s is full", e.Address)
}

func (e *MailboxFullError) Is(target error) bool {
	return target == ErrMailboxFull || target == replication.ErrQuotaExceeded
}

// RejectedError is a check's verdict against a message.
type RejectedError struct {
	Check     string // the check's Name
	Permanent bool   // refuse for good (SMTP 5xx), else ask to retry
	Reason    string // for the sender: what was wrong, without secrets
	// Enhanced is the RFC 3463 status, e.g. "5.4.6"; "" for the default
	// (5.7.1 or 4.7.1).
	Enhanced string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("delivery: refused by %s: %s", e.Check, e.Reason)
}

func (e *RejectedError) Is(target error) bool { return target == ErrRejected }
