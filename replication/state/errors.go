package state

import (
	"errors"
	"fmt"
)

// Errors a command's result can carry, and errors of the read API. They say
// what is wrong in mailbox terms; each protocol maps them to its own replies.
var (
	ErrNoSuchDomain      = errors.New("state: no such domain")
	ErrDomainExists      = errors.New("state: domain exists")
	ErrDomainNotEmpty    = errors.New("state: domain still has accounts or aliases")
	ErrNoSuchAccount     = errors.New("state: no such account")
	ErrAccountExists     = errors.New("state: account exists")
	ErrAccountDisabled   = errors.New("state: account disabled")
	ErrNoSuchMailbox     = errors.New("state: no such mailbox")
	ErrMailboxExists     = errors.New("state: mailbox exists")
	ErrHasChildren       = errors.New("state: mailbox has children")
	ErrInvalidName       = errors.New("state: invalid mailbox name")
	ErrCannotDeleteInbox = errors.New("state: INBOX cannot be deleted")
	ErrQuotaExceeded     = errors.New("state: quota exceeded")
	ErrNoSuchAlias       = errors.New("state: no such alias")
	ErrAliasExists       = errors.New("state: an alias has this address")
	ErrInvalidAddress    = errors.New("state: invalid address or domain name")
	ErrInvalidArgument   = errors.New("state: invalid argument")
	ErrExhausted         = errors.New("state: identifier space exhausted")
	ErrNoSuchMessage     = errors.New("state: no such message")
	ErrNoSuchBlob        = errors.New("state: no such blob")
	ErrTooManyMailboxes  = errors.New("state: the account has as many mailboxes as it may have")
	ErrNoSuchQueueEntry  = errors.New("state: no such queue entry")
	// ErrStaleLease: the queue entry is leased under another token (or
	// none): the reporter or renewer no longer holds it.
	ErrStaleLease = errors.New("state: the queue entry's lease is held by another claim")
	// Sieve scripts (cmd_sieve.go).
	ErrNoSuchScript      = errors.New("state: no such sieve script")
	ErrScriptExists      = errors.New("state: a sieve script of that name exists")
	ErrScriptActive      = errors.New("state: the sieve script is active: deactivate it first")
	ErrScriptLimit       = errors.New("state: the account has as many sieve scripts or script bytes as it may have, or the script is too large")
	ErrInvalidScriptName = errors.New("state: invalid sieve script name")
	// ErrVacationNotDue refuses a VacationSent claim: a reply of that
	// handle went to that sender within the days asked for.
	ErrVacationNotDue = errors.New("state: a vacation reply went to this sender recently")

	// ErrUnknownCommand is returned by Decode and Apply for a command type
	// byte this version does not know; the node must stop rather than diverge.
	ErrUnknownCommand = errors.New("state: unknown command type")
	// ErrClosed is returned after Close, or after a failed Restore left no
	// usable database.
	ErrClosed = errors.New("state: state machine closed")
)

// Code is the wire form of a command's error inside a result. Codes are
// stable: never renumber, only add.
type Code uint16

const (
	CodeOK Code = iota
	CodeNoSuchDomain
	CodeDomainExists
	CodeDomainNotEmpty
	CodeNoSuchAccount
	CodeAccountExists
	CodeAccountDisabled
	CodeNoSuchMailbox
	CodeMailboxExists
	CodeHasChildren
	CodeInvalidName
	CodeCannotDeleteInbox
	CodeQuotaExceeded
	CodeNoSuchAlias
	CodeAliasExists
	CodeInvalidAddress
	CodeInvalidArgument
	CodeExhausted
	CodeNoSuchMessage
	CodeNoSuchBlob
	CodeTooManyMailboxes
	CodeNoSuchQueueEntry
	CodeStaleLease
	CodeNoSuchScript
	CodeScriptExists
	CodeScriptActive
	CodeScriptLimit
	CodeInvalidScriptName
	CodeVacationNotDue
)

// codeErrs is indexed by Code; it is never written after initialisation.
var codeErrs = [...]error{
	CodeOK:                nil,
	CodeNoSuchDomain:      ErrNoSuchDomain,
	CodeDomainExists:      ErrDomainExists,
	CodeDomainNotEmpty:    ErrDomainNotEmpty,
	CodeNoSuchAccount:     ErrNoSuchAccount,
	CodeAccountExists:     ErrAccountExists,
	CodeAccountDisabled:   ErrAccountDisabled,
	CodeNoSuchMailbox:     ErrNoSuchMailbox,
	CodeMailboxExists:     ErrMailboxExists,
	CodeHasChildren:       ErrHasChildren,
	CodeInvalidName:       ErrInvalidName,
	CodeCannotDeleteInbox: ErrCannotDeleteInbox,
	CodeQuotaExceeded:     ErrQuotaExceeded,
	CodeNoSuchAlias:       ErrNoSuchAlias,
	CodeAliasExists:       ErrAliasExists,
	CodeInvalidAddress:    ErrInvalidAddress,
	CodeInvalidArgument:   ErrInvalidArgument,
	CodeExhausted:         ErrExhausted,
	CodeNoSuchMessage:     ErrNoSuchMessage,
	CodeNoSuchBlob:        ErrNoSuchBlob,
	CodeTooManyMailboxes:  ErrTooManyMailboxes,
	CodeNoSuchQueueEntry:  ErrNoSuchQueueEntry,
	CodeStaleLease:        ErrStaleLease,
	CodeNoSuchScript:      ErrNoSuchScript,
	CodeScriptExists:      ErrScriptExists,
	CodeScriptActive:      ErrScriptActive,
	CodeScriptLimit:       ErrScriptLimit,
	CodeInvalidScriptName: ErrInvalidScriptName,
	CodeVacationNotDue:    ErrVacationNotDue,
}

// Err returns the sentinel error for c (nil for CodeOK). A code from a newer
// version decodes to a descriptive error that matches no sentinel.
func (c Code) Err() error {
	if int(c) < len(codeErrs) {
		return codeErrs[c]
	}
	return fmt.Errorf("state: unknown error code %d", c)
}

// CodeOf returns the code for one of this package's sentinel errors.
// Any other non-nil error maps to CodeInvalidArgument; CodeOf never sees
// storage errors, which abort Apply instead of becoming results.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	for c, e := range codeErrs {
		if e != nil && errors.Is(err, e) {
			return Code(c)
		}
	}
	return CodeInvalidArgument
}
