package managesieve

import (
	"context"
	"errors"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Script is one of an account's Sieve scripts. At most one is active: the
// one that filters the account's incoming mail.
type Script struct {
	Name   string
	Active bool
}

// Store keeps the Sieve scripts of every account. The node's adapter over
// the replicated store implements it and maps the store's refusals to the
// errors below; any other error is answered NO (TRYLATER). ListScripts and
// GetScript must show every change committed anywhere before the call (a
// read barrier), so a script saved through one node lists on another.
type Store interface {
	ListScripts(ctx context.Context, account string) ([]Script, error)
	GetScript(ctx context.Context, account, name string) (string, error)
	// PutScript creates or replaces a script; replacing the active script
	// changes the active filter at once.
	PutScript(ctx context.Context, account, name, content string) error
	// DeleteScript refuses the active script (ErrActive).
	DeleteScript(ctx context.Context, account, name string) error
	// RenameScript keeps the script's active state.
	RenameScript(ctx context.Context, account, oldName, newName string) error
	// SetActive makes name the active script; "" deactivates every script.
	SetActive(ctx context.Context, account, name string) error
	// HaveSpace reports whether a script of size octets may be stored
	// under name (replacing one of that name counts its old size back).
	HaveSpace(ctx context.Context, account, name string, size int) error
}

// The refusals a Store reports, and their replies.
var (
	// ErrNoSuchScript: NO (NONEXISTENT).
	ErrNoSuchScript = errors.New("no such script")
	// ErrActive: the script is active and cannot be deleted: NO (ACTIVE).
	ErrActive = errors.New("the script is active")
	// ErrExists: the new name is taken: NO (ALREADYEXISTS).
	ErrExists = errors.New("a script of that name exists")
	// ErrTooMany: the account has its maximum of scripts:
	// NO (QUOTA/MAXSCRIPTS).
	ErrTooMany = errors.New("too many scripts")
	// ErrTooBig: the script, or the account's scripts together, would be
	// over the size limit: NO (QUOTA/MAXSIZE).
	ErrTooBig = errors.New("script too large")
	// ErrInvalid: the store refuses the name or the content for good (not
	// worth retrying): NO with the error's text.
	ErrInvalid = errors.New("invalid script")
)

// Checker compiles a script and returns why it is not valid Sieve (the
// error's text goes to the client), or nil. The node passes the Sieve
// package's compile step.
type Checker func(script []byte) error

// Authenticator checks a user's password, as for IMAP and POP3: a wrong
// password or a disabled account is replication.ErrAuthFailed; any other
// error means the check could not be made. *replication.Store is one.
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) (state.Account, error)
}

var _ Authenticator = (*replication.Store)(nil)
