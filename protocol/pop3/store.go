package pop3

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// inbox is the maildrop's mailbox name.
const inbox = "INBOX"

// mailStore is the slice of the replicated store a POP3 session uses. The
// server uses *replication.Store through storeAdapter; tests fake it.
type mailStore interface {
	Authenticate(ctx context.Context, username, password string) (state.Account, error)
	// OpenMaildrop waits for a read barrier and returns the INBOX as one
	// consistent view.
	OpenMaildrop(ctx context.Context, account string) (maildrop, error)
	// Exists reports whether the message is still in the mailbox, from
	// local state (no barrier).
	Exists(ctx context.Context, account string, mailboxID uint64, uid uint32) (bool, error)
	OpenBody(ctx context.Context, id state.BlobID) (body, error)
	// Expunge removes exactly uids (those already gone are skipped) in one
	// committed operation.
	Expunge(ctx context.Context, account string, mailboxID uint64, uids []uint32) error
	// MarkSeen adds \Seen to uids.
	MarkSeen(ctx context.Context, account string, mailboxID uint64, uids []uint32) error
}

// body is a verified message body.
type body interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// maildrop is the login view of the INBOX.
type maildrop struct {
	mailboxID   uint64
	uidValidity uint32
	msgs        []entry // message number i is msgs[i-1]
}

// entry is one message of the view.
type entry struct {
	uid     uint32
	blob    state.BlobID
	rawSize int64
	seen    bool
}

// replicatedStore is the slice of *replication.Store that storeAdapter
// maps onto mailStore.
type replicatedStore interface {
	Authenticate(ctx context.Context, username, password string) (state.Account, error)
	OpenMessages(ctx context.Context, account, name string) (replication.OpenedMessages, error)
	HasMessage(ctx context.Context, account string, mailboxID uint64, uid uint32) (bool, error)
	OpenBody(ctx context.Context, id state.BlobID) (*replication.Body, error)
	Expunge(ctx context.Context, account string, mailboxID uint64, uids state.UIDSet, onlyDeleted bool) (state.ExpungeResult, error)
	SetFlags(ctx context.Context, account string, mailboxID uint64, c replication.FlagChange) (state.FlagsResult, error)
}

var _ replicatedStore = (*replication.Store)(nil)

// storeAdapter maps mailStore onto the replicated store.
type storeAdapter struct{ s replicatedStore }

func (a storeAdapter) Authenticate(ctx context.Context, username, password string) (state.Account, error) {
	return a.s.Authenticate(ctx, username, password)
}

// OpenMaildrop: OpenMessages passes the read barrier itself.
func (a storeAdapter) OpenMaildrop(ctx context.Context, account string) (maildrop, error) {
	mb, err := a.s.OpenMessages(ctx, account, inbox)
	if err != nil {
		return maildrop{}, err
	}
	md := maildrop{mailboxID: mb.ID, uidValidity: mb.UIDValidity, msgs: make([]entry, len(mb.Messages))}
	for i, m := range mb.Messages {
		md.msgs[i] = entry{uid: m.UID, blob: m.Blob, rawSize: m.Size, seen: m.Flags.System&state.FlagSeen != 0}
	}
	return md, nil
}

func (a storeAdapter) Exists(ctx context.Context, account string, mailboxID uint64, uid uint32) (bool, error) {
	return a.s.HasMessage(ctx, account, mailboxID, uid)
}

func (a storeAdapter) OpenBody(ctx context.Context, id state.BlobID) (body, error) {
	b, err := a.s.OpenBody(ctx, id)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return b, nil
}

func (a storeAdapter) Expunge(ctx context.Context, account string, mailboxID uint64, uids []uint32) error {
	_, err := a.s.Expunge(ctx, account, mailboxID, state.UIDSetOf(uids...), false)
	return err
}

func (a storeAdapter) MarkSeen(ctx context.Context, account string, mailboxID uint64, uids []uint32) error {
	_, err := a.s.SetFlags(ctx, account, mailboxID, replication.FlagChange{
		UIDs: state.UIDSetOf(uids...), Op: state.FlagsAdd, Flags: []string{`\Seen`},
	})
	return err
}

// sizeCache remembers wire sizes by body. Bodies are content-addressed and
// never change, so an entry never goes stale; the cache only bounds work.
// Two generations: when the young one fills up, the old one is dropped.
type sizeCache struct {
	limit int
	mu    sync.Mutex
	young map[state.BlobID]int64
	old   map[state.BlobID]int64
}

func newSizeCache(limit int) *sizeCache {
	return &sizeCache{limit: max(limit/2, 1), young: map[state.BlobID]int64{}}
}

func (c *sizeCache) get(id state.BlobID) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.young[id]; ok {
		return n, true
	}
	n, ok := c.old[id]
	if ok {
		c.putLocked(id, n)
	}
	return n, ok
}

func (c *sizeCache) put(id state.BlobID, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(id, n)
}

func (c *sizeCache) putLocked(id state.BlobID, n int64) {
	if len(c.young) >= c.limit {
		c.old, c.young = c.young, make(map[state.BlobID]int64, c.limit)
	}
	c.young[id] = n
}

// measure returns a body's wire size, from the cache or by reading it.
func (c *sizeCache) measure(ctx context.Context, st mailStore, id state.BlobID) (int64, error) {
	if n, ok := c.get(id); ok {
		return n, nil
	}
	b, err := st.OpenBody(ctx, id)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	n, err := wireSize(b, b.Size())
	if err != nil {
		return 0, fmt.Errorf("read body %s: %w", id, err)
	}
	c.put(id, n)
	return n, nil
}
