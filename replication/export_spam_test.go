package replication

import (
	"context"

	"github.com/mailcluster/mailcluster/replication/state"
)

// SetSpamTrainerTokens replaces how a trainer tokenizes a body (tests have
// no blob store).
func SetSpamTrainerTokens(t *SpamTrainer, f func(ctx context.Context, blob state.BlobID) ([]uint64, error)) {
	t.tokens = f
}
