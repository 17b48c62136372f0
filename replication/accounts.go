package replication

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication/state"
)

// authBarrierWait bounds how long a login waits to learn of account
// changes made through other nodes (a healthy cluster answers in well under
// a millisecond).
const authBarrierWait = time.Second

// Authenticate checks a user's password. The user name is the full address
// (case-insensitive). Disabled accounts and unknown users fail exactly like
// a wrong password, so a client cannot probe which accounts exist.
func (s *Store) Authenticate(ctx context.Context, username, password string) (state.Account, error) {
	address, err := state.NormalizeAddress(username)
	if err != nil {
		return state.Account{}, ErrAuthFailed
	}
	// A password change, a disabled flag or a new account made a moment ago
	// through another node counts here at once. A node that cannot reach
	// the leader within authBarrierWait answers from its own state: logins
	// of known accounts keep working on a node cut off from the majority.
	// A node the leader answered but that is still behind (raft can pause
	// replication to a node for seconds after a partition heals) waits to
	// catch up, or the login fails temporarily: it must not judge by an old
	// password.
	bctx, cancel := context.WithTimeout(ctx, authBarrierWait)
	err = s.AddressingBarrier(bctx)
	cancel()
	if errors.Is(err, consensus.ErrCatchingUp) {
		if err := s.AddressingBarrier(ctx); err != nil {
			return state.Account{}, err
		}
	}
	acct, err := s.account(address)
	if err != nil {
		if errors.Is(err, ErrNoSuchAccount) {
			// Spend the same time as a real check, so timing does not
			// reveal whether the account exists.
			_, _ = verifyPassword(dummyHash, password)
			return state.Account{}, ErrAuthFailed
		}
		return state.Account{}, err
	}
	if s.auth.ok(address, acct.PasswordHash, password) {
		if acct.Disabled {
			return state.Account{}, ErrAuthFailed
		}
		return acct, nil
	}
	ok, err := verifyPassword(acct.PasswordHash, password)
	if err != nil || !ok || acct.Disabled {
		return state.Account{}, ErrAuthFailed
	}
	s.auth.remember(address, acct.PasswordHash, password)
	return acct, nil
}

// dummyHash is checked against when the account does not exist.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$3bJ2b5xGqWCYiYQm5XnS5yq8vN5hQ0cW7oY2f5j1pWE"

func (s *Store) account(address string) (state.Account, error) {
	var acct state.Account
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		acct, err = tx.Account(address)
		return err
	})
	return acct, err
}

// Account returns an account's settings and usage.
func (s *Store) Account(ctx context.Context, address string) (state.Account, error) {
	address, err := state.NormalizeAddress(address)
	if err != nil {
		return state.Account{}, ErrInvalidAddress
	}
	return s.account(address)
}

// AddDomain makes a domain local.
func (s *Store) AddDomain(ctx context.Context, name string) error {
	_, err := propose[state.Done](ctx, s, state.AddDomain{Time: s.stamp(), Name: name})
	return err
}

// DeleteDomain removes a domain that has no accounts or aliases left.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	_, err := propose[state.Done](ctx, s, state.DeleteDomain{Time: s.stamp(), Name: name})
	return err
}

// Domains lists the local domains.
func (s *Store) Domains(ctx context.Context) ([]state.Domain, error) {
	var out []state.Domain
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.Domains()
		return err
	})
	return out, err
}

// IsLocalDomain reports whether mail for domain is stored here.
func (s *Store) IsLocalDomain(ctx context.Context, domain string) bool {
	name, err := state.NormalizeDomain(domain)
	if err != nil {
		return false
	}
	found := false
	_ = s.fsm.View(func(tx *state.Tx) error {
		_, err := tx.Domain(name)
		found = err == nil
		return nil
	})
	return found
}

// SetCatchAll routes mail for unknown addresses of domain to target
// (empty clears it).
func (s *Store) SetCatchAll(ctx context.Context, domain, target string) error {
	_, err := propose[state.Done](ctx, s, state.SetCatchAll{Time: s.stamp(), Domain: domain, Target: target})
	return err
}

// NewUser describes an account to create.
type NewUser struct {
	Address       string
	Password      string
	QuotaBytes    int64 // 0: unlimited
	QuotaMessages int64 // 0: unlimited
}

// AddUser creates an account with the standard mailboxes. The password is
// hashed here, on the proposing node; only the hash is replicated.
func (s *Store) AddUser(ctx context.Context, u NewUser) (state.Account, error) {
	hash, err := HashPassword(u.Password)
	if err != nil {
		return state.Account{}, err
	}
	if u.QuotaBytes < 0 || u.QuotaMessages < 0 {
		return state.Account{}, ErrInvalidArgument
	}
	if _, err := propose[state.AccountResult](ctx, s, state.AddAccount{
		Time: s.stamp(), Address: u.Address, PasswordHash: hash,
		QuotaBytes: u.QuotaBytes, QuotaMessages: u.QuotaMessages,
	}); err != nil {
		return state.Account{}, err
	}
	return s.Account(ctx, u.Address)
}

// DeleteUser removes an account with all its mail.
func (s *Store) DeleteUser(ctx context.Context, address string) error {
	_, err := propose[state.Done](ctx, s, state.DeleteAccount{Time: s.stamp(), Address: address})
	return err
}

// SetPassword replaces an account's password.
func (s *Store) SetPassword(ctx context.Context, address, password string) error {
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	_, err = propose[state.Done](ctx, s, state.SetPassword{Time: s.stamp(), Address: address, PasswordHash: hash})
	return err
}

// SetQuota sets an account's limits (0: unlimited).
func (s *Store) SetQuota(ctx context.Context, address string, bytes, messages int64) error {
	if bytes < 0 || messages < 0 {
		return ErrInvalidArgument
	}
	_, err := propose[state.Done](ctx, s, state.SetQuota{Time: s.stamp(), Address: address, QuotaBytes: bytes, QuotaMessages: messages})
	return err
}

// SetUserDisabled blocks or allows an account's logins and deliveries.
func (s *Store) SetUserDisabled(ctx context.Context, address string, disabled bool) error {
	_, err := propose[state.Done](ctx, s, state.SetAccountDisabled{Time: s.stamp(), Address: address, Disabled: disabled})
	return err
}

// SetForwarding forwards an account's mail to targets, keeping a local
// copy if keepLocal. No targets turns forwarding off.
func (s *Store) SetForwarding(ctx context.Context, address string, targets []string, keepLocal bool) error {
	_, err := propose[state.Done](ctx, s, state.SetForwarding{Time: s.stamp(), Address: address, Targets: targets, KeepLocal: keepLocal})
	return err
}

// Users lists the accounts of a domain ("" for all).
func (s *Store) Users(ctx context.Context, domain string) ([]state.Account, error) {
	var out []state.Account
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.Accounts(strings.ToLower(domain))
		return err
	})
	return out, err
}

// SetAlias creates or replaces an alias.
func (s *Store) SetAlias(ctx context.Context, address string, targets []string) error {
	if len(targets) == 0 {
		return ErrInvalidArgument
	}
	_, err := propose[state.Done](ctx, s, state.SetAlias{Time: s.stamp(), Address: address, Targets: targets})
	return err
}

// DeleteAlias removes an alias.
func (s *Store) DeleteAlias(ctx context.Context, address string) error {
	_, err := propose[state.Done](ctx, s, state.DeleteAlias{Time: s.stamp(), Address: address})
	return err
}

// Aliases lists the aliases of a domain.
func (s *Store) Aliases(ctx context.Context, domain string) ([]state.Alias, error) {
	var out []state.Alias
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.Aliases(strings.ToLower(domain))
		return err
	})
	return out, err
}

// Resolve says where mail for address goes: local accounts and external
// addresses (aliases, catch-all, sub-addressing, forwarding).
func (s *Store) Resolve(ctx context.Context, address string) (state.Resolution, error) {
	var res state.Resolution
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		res, err = tx.Resolve(address)
		return err
	})
	return res, err
}

// Quota returns an account's usage and limits.
func (s *Store) Quota(ctx context.Context, account string) (state.Quota, error) {
	var q state.Quota
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		q, err = tx.Quota(account)
		return err
	})
	return q, err
}
