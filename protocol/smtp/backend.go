package smtp

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// backend is the slice of the replicated store the SMTP server uses. The
// node hands a *replication.Store (wrapped by storeBackend); unit tests use
// a fake.
type backend interface {
	resolve(ctx context.Context, address string) (state.Resolution, error)
	isLocalDomain(ctx context.Context, domain string) bool
	account(ctx context.Context, address string) (state.Account, error)
	// barrier waits until this node has applied every change to domains,
	// accounts, aliases and forwarding committed anywhere: recipient and
	// sender decisions follow what was changed a moment ago on another node.
	barrier(ctx context.Context) error
	// fullBarrier waits for everything committed anywhere, mail usage
	// included: used before refusing a recipient whose mailbox looks full
	// (mail expunged elsewhere a moment ago may have made room).
	fullBarrier(ctx context.Context) error
	// authenticate returns the account address for good credentials.
	authenticate(ctx context.Context, username, password string) (string, error)
	// owns reports whether account may use address as its sender: its own
	// address, a +tag form of it, or an alias that delivers to it.
	owns(ctx context.Context, account, address string) (bool, error)
	deliver(ctx context.Context, body io.Reader, rcpts []replication.Recipient, date time.Time, maxSize int64) (replication.Delivered, error)
	maxMessageSize() int64
}

// storeBackend adapts *replication.Store.
type storeBackend struct{ s *replication.Store }

func (b storeBackend) resolve(ctx context.Context, address string) (state.Resolution, error) {
	return b.s.Resolve(ctx, address)
}

func (b storeBackend) isLocalDomain(ctx context.Context, domain string) bool {
	return b.s.IsLocalDomain(ctx, domain)
}

func (b storeBackend) account(ctx context.Context, address string) (state.Account, error) {
	return b.s.Account(ctx, address)
}

func (b storeBackend) barrier(ctx context.Context) error { return b.s.AddressingBarrier(ctx) }

func (b storeBackend) fullBarrier(ctx context.Context) error { return b.s.Barrier(ctx) }

func (b storeBackend) authenticate(ctx context.Context, username, password string) (string, error) {
	acct, err := b.s.Authenticate(ctx, username, password)
	return acct.Address, err
}

func (b storeBackend) deliver(ctx context.Context, body io.Reader, rcpts []replication.Recipient, date time.Time, maxSize int64) (replication.Delivered, error) {
	return b.s.Deliver(ctx, body, rcpts, date, maxSize)
}

func (b storeBackend) maxMessageSize() int64 { return b.s.MaxMessageSize() }

func (b storeBackend) owns(ctx context.Context, account, address string) (bool, error) {
	addr, err := state.NormalizeAddress(address)
	if err != nil {
		return false, nil
	}
	if ownAddress(account, addr) {
		return true, nil
	}
	// An alias (not a catch-all: that would hand every unknown address of
	// the domain to one user) whose expansion reaches the account.
	owned := false
	err = b.s.View(func(tx *state.Tx) error {
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
