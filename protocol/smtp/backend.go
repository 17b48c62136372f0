package smtp

import (
	"context"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication"
)

// backend is the slice of the replicated store the SMTP server uses: what
// the delivery pipeline needs, and the login check. The node hands a
// *replication.Store (wrapped by storeBackend); unit tests use a fake.
type backend interface {
	delivery.Store
	// authenticate returns the account address for good credentials.
	authenticate(ctx context.Context, username, password string) (string, error)
	maxMessageSize() int64
}

// storeBackend adapts *replication.Store.
type storeBackend struct{ *replication.Store }

func (b storeBackend) authenticate(ctx context.Context, username, password string) (string, error) {
	acct, err := b.Authenticate(ctx, username, password)
	return acct.Address, err
}

func (b storeBackend) maxMessageSize() int64 { return b.MaxMessageSize() }
