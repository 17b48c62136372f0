package replication

import (
	"context"
	"errors"
	"strings"

	"github.com/mailcluster/mailcluster/replication/state"
)

// OwnsSender reports, from this node's state, whether account may use
// address as its sender: its own address, a +tag form of it, or an alias
// (not a catch-all: that would hand every unknown address of the domain to
// one user) whose expansion reaches the account. A malformed address is
// owned by nobody. It passes no read barrier: a caller that is about to
// refuse passes one and asks again.
func (s *Store) OwnsSender(ctx context.Context, account, address string) (bool, error) {
	addr, err := state.NormalizeAddress(address)
	if err != nil {
		return false, nil
	}
	if ownAddress(account, addr) {
		return true, nil
	}
	owned := false
	err = s.fsm.View(func(tx *state.Tx) error {
		if _, err := tx.Alias(addr); err != nil {
			if errors.Is(err, state.ErrNoSuchAlias) {
				return nil
			}
			return err
		}
		res, err := tx.Resolve(addr)
		if err != nil {
			if errors.Is(err, state.ErrNoSuchAccount) || errors.Is(err, state.ErrNoSuchDomain) {
				return nil
			}
			return err
		}
		for _, a := range res.Accounts {
			if a == account {
				owned = true
			}
		}
		return nil
	})
	return owned, err
}

// ownAddress reports whether the normalized addr is account itself or
// account with a +tag.
func ownAddress(account, addr string) bool {
	if addr == account {
		return true
	}
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return false
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		return local[:i]+"@"+domain == account
	}
	return false
}
