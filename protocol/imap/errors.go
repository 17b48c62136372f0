package imap

import (
	"context"
	"errors"
	"net"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Response codes go-imap has no constant for.
const (
	codeExpungeIssued imap.ResponseCode = "EXPUNGEISSUED" // RFC 5530
	codeUseAttr       imap.ResponseCode = "USEATTR"       // RFC 6154
)

// errSessionEnded is returned once the session said BYE and closed the
// connection; it wraps net.ErrClosed so imapserver ends quietly.
var errSessionEnded = &sessionEndedError{}

type sessionEndedError struct{}

func (*sessionEndedError) Error() string { return "imap: session ended" }
func (*sessionEndedError) Unwrap() error { return net.ErrClosed }

func no(code imap.ResponseCode, text string) *imap.Error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

func bad(text string) *imap.Error {
	return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
}

var (
	errReadOnly     = no("", "Mailbox is selected read-only (EXAMINE)")
	errNoMailbox    = no(imap.ResponseCodeNonExistent, "No such mailbox")
	errTryCreate    = no(imap.ResponseCodeTryCreate, "No such mailbox")
	errUnavailable  = no(imap.ResponseCodeUnavailable, "The cluster cannot commit this change right now (no quorum); try again")
	errExpungeSeen  = no(codeExpungeIssued, "Some of the requested messages were expunged by another session")
	errSelectedGone = no(imap.ResponseCodeNonExistent, "The selected mailbox no longer exists")
)

// storeError maps a store error to the IMAP reply, in one place. Errors it
// does not know are temporary (replication.Temporary), so a client retries
// rather than giving up on something that may work in a moment.
func storeError(err error) error {
	var ie *imap.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ie):
		return err
	case errors.Is(err, replication.ErrOutcomeUnknown):
		return no(imap.ResponseCodeUnavailable, "The cluster lost its majority while committing this change; it may have been applied: look before you retry")
	case errors.Is(err, replication.ErrNoQuorum):
		return errUnavailable
	case errors.Is(err, replication.ErrBodyUnavailable):
		return no(imap.ResponseCodeUnavailable, "The message body is on no reachable node right now; try again")
	case errors.Is(err, replication.ErrQuotaExceeded):
		return no(imap.ResponseCodeOverQuota, "Mailbox quota exceeded")
	case errors.Is(err, replication.ErrNoSuchMailbox):
		return errNoMailbox
	case errors.Is(err, replication.ErrMailboxExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case errors.Is(err, replication.ErrHasChildren):
		return no(imap.ResponseCodeHasChildren, "Mailbox has child mailboxes; delete them first")
	case errors.Is(err, replication.ErrInvalidName):
		return no(imap.ResponseCodeCannot, "Invalid mailbox name")
	case errors.Is(err, replication.ErrCannotDeleteInbox):
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	case errors.Is(err, replication.ErrTooLarge):
		return no(imap.ResponseCodeTooBig, "Message is larger than the size limit")
	case errors.Is(err, replication.ErrAuthFailed):
		return no(imap.ResponseCodeAuthenticationFailed, "Authentication failed")
	case errors.Is(err, replication.ErrAccountDisabled):
		return no(imap.ResponseCodeContactAdmin, "Account is disabled")
	case errors.Is(err, replication.ErrNoSuchAccount):
		return no(imap.ResponseCodeContactAdmin, "Account no longer exists")
	case errors.Is(err, replication.ErrTooManyMailboxes):
		return no(imap.ResponseCodeLimit, "This account has as many mailboxes as it may have; delete some first")
	case errors.Is(err, state.ErrExhausted):
		return no(imap.ResponseCodeLimit, "Mailbox has run out of UIDs; create a new one")
	case errors.Is(err, replication.ErrInvalidArgument):
		return no(imap.ResponseCodeCannot, "The store refused these arguments")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return no(imap.ResponseCodeUnavailable, "Server is shutting down or the command took too long; try again")
	case replication.Temporary(err):
		return errUnavailable
	}
	return no(imap.ResponseCodeServerBug, "Internal error")
}
