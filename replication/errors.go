package replication

import (
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Errors the protocols map to their replies. The state machine's errors are
// the same values, so errors.Is works on either name.
var (
	// ErrNoQuorum: the cluster could not commit the change (or make W copies
	// of the body) in time. Temporary: the client should retry.
	ErrNoQuorum = consensus.ErrNoQuorum
	// ErrOutcomeUnknown comes together with ErrNoQuorum (or the caller's
	// context error) when the change reached a leader that did not answer
	// in time: it may still take effect. Protocols must not say "not
	// stored" then.
	ErrOutcomeUnknown = consensus.ErrOutcomeUnknown
	// ErrAuthFailed: wrong user name or password, or a disabled account.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrTooLarge: the message is bigger than the size limit.
	ErrTooLarge = blob.ErrTooLarge
	// ErrBodyUnavailable: no node that should hold the body could supply it.
	ErrBodyUnavailable = errors.New("message body is unavailable on every reachable replica")

	ErrNoSuchDomain      = state.ErrNoSuchDomain
	ErrDomainExists      = state.ErrDomainExists
	ErrDomainNotEmpty    = state.ErrDomainNotEmpty
	ErrNoSuchAccount     = state.ErrNoSuchAccount
	ErrAccountExists     = state.ErrAccountExists
	ErrAccountDisabled   = state.ErrAccountDisabled
	ErrNoSuchMailbox     = state.ErrNoSuchMailbox
	ErrMailboxExists     = state.ErrMailboxExists
	ErrHasChildren       = state.ErrHasChildren
	ErrInvalidName       = state.ErrInvalidName
	ErrCannotDeleteInbox = state.ErrCannotDeleteInbox
	ErrQuotaExceeded     = state.ErrQuotaExceeded
	ErrNoSuchAlias       = state.ErrNoSuchAlias
	ErrAliasExists       = state.ErrAliasExists
	ErrInvalidAddress    = state.ErrInvalidAddress
	ErrInvalidArgument   = state.ErrInvalidArgument
	ErrNoSuchMessage     = state.ErrNoSuchMessage
	// ErrTooManyMailboxes: the account has reached its limit of mailboxes
	// (Config.MaxMailboxesPerAccount).
	ErrTooManyMailboxes = state.ErrTooManyMailboxes
	// ErrNoSuchQueueEntry and ErrStaleLease refuse one outcome of a queue
	// report (see QueueReport): the entry is gone, or another claim holds it.
	ErrNoSuchQueueEntry = state.ErrNoSuchQueueEntry
	ErrStaleLease       = state.ErrStaleLease
	// Sieve scripts (sieve.go): no such script, the name is taken, the
	// script is active (deactivate before deleting), a limit of
	// state.MaxSieveScripts, state.MaxSieveScriptSize or
	// state.MaxSieveBytes, a name RFC 5804 §1.6 does not allow.
	ErrNoSuchScript      = state.ErrNoSuchScript
	ErrScriptExists      = state.ErrScriptExists
	ErrScriptActive      = state.ErrScriptActive
	ErrScriptLimit       = state.ErrScriptLimit
	ErrInvalidScriptName = state.ErrInvalidScriptName
)

// Temporary reports whether err is worth retrying later: the cluster lacked
// a quorum or replicas, or this node is shutting down. Protocols answer
// these with 4xx / NO [UNAVAILABLE] / -ERR [SYS/TEMP], never a permanent
// failure.
func Temporary(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNoQuorum), errors.Is(err, ErrOutcomeUnknown), errors.Is(err, consensus.ErrShutdown),
		errors.Is(err, blob.ErrNotEnoughReplicas), errors.Is(err, ErrBodyUnavailable):
		return true
	}
	// Everything that is not a known mailbox-level refusal is an internal
	// problem: temporary, so that nothing is refused for good by accident.
	for _, permanent := range []error{
		ErrAuthFailed, ErrTooLarge, ErrNoSuchDomain, ErrDomainExists, ErrDomainNotEmpty,
		ErrNoSuchAccount, ErrAccountExists, ErrAccountDisabled, ErrNoSuchMailbox,
		ErrMailboxExists, ErrHasChildren, ErrInvalidName, ErrCannotDeleteInbox,
		ErrQuotaExceeded, ErrNoSuchAlias, ErrAliasExists, ErrInvalidAddress,
		ErrInvalidArgument, ErrNoSuchMessage, ErrTooManyMailboxes, ErrNoSuchQueueEntry, ErrStaleLease,
		ErrNoSuchScript, ErrScriptExists, ErrScriptActive, ErrScriptLimit, ErrInvalidScriptName,
	} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return true
}

// noQuorum wraps a replication failure as ErrNoQuorum, keeping the cause.
func noQuorum(err error) error {
	if err == nil || errors.Is(err, ErrNoQuorum) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrNoQuorum, err)
}
