package imap

import (
	"context"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// mailStore is the slice of the replicated store an IMAP session uses
// (*replication.Store). Its read methods keep the read-barrier rule
// themselves (DESIGN.md §1 promise 4): those that open a mailbox or
// answer about one (SelectMailbox, MailboxStatus, ListMailboxes) pass a
// barrier; the others read local state and say in their doc comment why
// that is enough. There is no way to reach the state machine's
// transactions from here.
type mailStore interface {
	Authenticate(ctx context.Context, username, password string) (state.Account, error)
	Account(ctx context.Context, address string) (state.Account, error)
	Quota(ctx context.Context, account string) (state.Quota, error)
	Feed() *replication.Feed

	// Reads.
	SelectMailbox(ctx context.Context, account, name string, opts replication.SelectOptions) (replication.SelectedMailbox, error)
	MailboxStatus(ctx context.Context, account, name string, items replication.StatusItems) (replication.MailboxStatus, error)
	ListMailboxes(ctx context.Context, account string, opts replication.ListOptions) (replication.Listing, error)
	MailboxFlags(ctx context.Context, account string, mailboxID uint64) (replication.MailboxFlags, error)
	LoadMessages(ctx context.Context, account string, mailboxID uint64, uids []uint32, withSummary bool) ([]replication.LoadedMessage, error)
	Mailbox(ctx context.Context, account, name string) (state.Mailbox, error)
	MailboxByID(ctx context.Context, account string, id uint64) (state.Mailbox, error)
	Summary(ctx context.Context, id state.BlobID) (*message.Summary, error)
	Barrier(ctx context.Context) error

	// Writes.
	CreateMailbox(ctx context.Context, account, name string, use state.SpecialUse, subscribe bool) (state.MailboxResult, error)
	DeleteMailbox(ctx context.Context, account, name string) error
	RenameMailbox(ctx context.Context, account, from, to string) (state.MailboxResult, error)
	SetSubscribed(ctx context.Context, account, name string, subscribed bool) error
	SetFlags(ctx context.Context, account string, mailboxID uint64, c replication.FlagChange) (state.FlagsResult, error)
	Copy(ctx context.Context, account string, from uint64, uids state.UIDSet, to uint64) (state.CopyResult, error)
	Move(ctx context.Context, account string, from uint64, uids state.UIDSet, to uint64) (state.CopyResult, error)
	Expunge(ctx context.Context, account string, mailboxID uint64, uids state.UIDSet, onlyDeleted bool) (state.ExpungeResult, error)
	ClaimRecent(ctx context.Context, account string, mailboxID uint64) (state.RecentResult, error)
}

var _ mailStore = (*replication.Store)(nil)
