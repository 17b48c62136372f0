package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Ingested is a message body that is durable on W replicas, with the
// summary parsed from it: what Ingest returns and the commit functions
// reference. One that is never committed costs nothing but disk until blob GC
// removes it (unreferenced, past the grace period); nothing needs undoing.
type Ingested struct {
	Blob    state.BlobID
	Size    int64
	summary []byte
}

// Ingest streams a raw message into the blob store, parsing its summary on
// the way, and returns once W replicas hold it durably. The first phase of
// a delivery: nothing refers to the body until CommitDelivery or
// CommitAppend. A reader error (the client's data refused, or cut) ends it
// with that error and leaves nothing behind.
func (s *Store) Ingest(ctx context.Context, body io.Reader, maxSize int64) (Ingested, error) {
	if maxSize <= 0 {
		maxSize = s.maxSize
	}
	// A node cut off from the majority fails here, within the propose
	// timeout, rather than after waiting on peers it cannot reach.
	if err := noQuorumIfConsensus(s.cons.AwaitLeader(ctx)); err != nil {
		return Ingested{}, err
	}
	parser := message.NewParser(message.Options{})
	id, size, err := s.bodies.Put(ctx, io.TeeReader(body, parser), maxSize)
	if err != nil {
		switch {
		case errors.Is(err, blob.ErrTooLarge):
			return Ingested{}, ErrTooLarge
		case errors.Is(err, blob.ErrNotEnoughReplicas):
			return Ingested{}, noQuorum(err)
		}
		return Ingested{}, err
	}
	summary, err := parser.Summary().MarshalBinary()
	if err != nil {
		return Ingested{}, fmt.Errorf("encode summary: %w", err)
	}
	return Ingested{Blob: state.BlobID(id), Size: size, summary: summary}, nil
}

// Recipient is one local copy of a delivered message.
type Recipient struct {
	Account string   // full address of the account
	Mailbox string   // empty: INBOX
	Flags   []string // e.g. \Seen for a copy into Sent
}

// Delivered is the outcome of Deliver: one result per recipient, in order.
type Delivered struct {
	Blob    state.BlobID
	Size    int64
	Results []state.TargetResult // Err() per recipient: nil, quota exceeded, no such account, disabled
	Queued  []state.QueueID      // the queue entries of the remote recipients, in order (CommitDeliveryQueued)
}

// Deliver stores one message for several local recipients: Ingest, then
// CommitDelivery.
func (s *Store) Deliver(ctx context.Context, body io.Reader, recipients []Recipient, internalDate time.Time, maxSize int64) (Delivered, error) {
	if len(recipients) == 0 {
		return Delivered{}, ErrInvalidArgument
	}
	b, err := s.Ingest(ctx, body, maxSize)
	if err != nil {
		return Delivered{}, err
	}
	return s.CommitDelivery(ctx, b, recipients, internalDate)
}

// CommitDelivery proposes one Raft command referencing an ingested body
// from every recipient's mailbox. It returns nil only when the command is
// committed; recipients can still fail one by one (see Delivered.Results).
// It does not wait for this node to apply the change (a deliverer does not
// read its mail back here); readers open mailboxes through the read
// barrier anyway.
func (s *Store) CommitDelivery(ctx context.Context, b Ingested, recipients []Recipient, internalDate time.Time) (Delivered, error) {
	if len(recipients) == 0 || b.Blob.IsZero() {
		return Delivered{}, ErrInvalidArgument
	}
	return s.CommitDeliveryQueued(ctx, b, recipients, nil, internalDate)
}

// Append stores a message in one of account's mailboxes (IMAP APPEND):
// Ingest, then CommitAppend.
func (s *Store) Append(ctx context.Context, account string, mailboxID uint64, body io.Reader, flags []string, internalDate time.Time, maxSize int64) (state.AppendResult, error) {
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return state.AppendResult{}, err
	}
	b, err := s.Ingest(ctx, body, maxSize)
	if err != nil {
		return state.AppendResult{}, err
	}
	return s.CommitAppend(ctx, account, mailboxID, b, flags, internalDate)
}

// CommitAppend commits an ingested body into one of account's mailboxes,
// and waits until this node has applied it (the session that appended
// reads it back at once).
func (s *Store) CommitAppend(ctx context.Context, account string, mailboxID uint64, b Ingested, flags []string, internalDate time.Time) (state.AppendResult, error) {
	if b.Blob.IsZero() {
		return state.AppendResult{}, ErrInvalidArgument
	}
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return state.AppendResult{}, err
	}
	return propose[state.AppendResult](ctx, s, state.Append{
		Time: s.stamp(), Account: account, MailboxID: mailboxID, Blob: b.Blob, Size: b.Size,
		Summary: b.summary, Flags: state.ParseFlags(flags), InternalDate: internalDate,
	})
}

// CreateMailbox creates a mailbox (and missing parents); ErrTooManyMailboxes
// if the account would pass its limit.
func (s *Store) CreateMailbox(ctx context.Context, account, name string, use state.SpecialUse, subscribe bool) (state.MailboxResult, error) {
	return propose[state.MailboxResult](ctx, s, state.CreateMailbox{
		Time: s.stamp(), Account: account, Name: name, SpecialUse: use, Subscribe: subscribe, MaxMailboxes: s.maxMbox,
	})
}

// DeleteMailbox deletes a mailbox without children, with its messages.
func (s *Store) DeleteMailbox(ctx context.Context, account, name string) error {
	_, err := propose[state.Done](ctx, s, state.DeleteMailbox{Time: s.stamp(), Account: account, Name: name})
	return err
}

// RenameMailbox renames a mailbox and its children (INBOX: moves its
// messages into a new mailbox).
func (s *Store) RenameMailbox(ctx context.Context, account, from, to string) (state.MailboxResult, error) {
	return propose[state.MailboxResult](ctx, s, state.RenameMailbox{
		Time: s.stamp(), Account: account, OldName: from, NewName: to, MaxMailboxes: s.maxMbox,
	})
}

// SetSubscribed adds or removes a subscription.
func (s *Store) SetSubscribed(ctx context.Context, account, name string, subscribed bool) error {
	_, err := propose[state.Done](ctx, s, state.SetSubscribed{Time: s.stamp(), Account: account, Name: name, Subscribed: subscribed})
	return err
}

// FlagChange is a STORE: add, remove or replace flags on a set of UIDs.
type FlagChange struct {
	UIDs  state.UIDSet
	Op    state.FlagOp
	Flags []string
	// UnchangedSince, if set, skips messages modified after that MODSEQ.
	UnchangedSince *uint64
}

// SetFlags changes flags; the result lists what changed and the new MODSEQ.
func (s *Store) SetFlags(ctx context.Context, account string, mailboxID uint64, c FlagChange) (state.FlagsResult, error) {
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return state.FlagsResult{}, err
	}
	return propose[state.FlagsResult](ctx, s, state.SetFlags{
		Time: s.stamp(), MailboxID: mailboxID, UIDs: c.UIDs, Op: c.Op,
		Flags: state.ParseFlags(c.Flags), UnchangedSince: c.UnchangedSince,
	})
}

// Copy copies messages between two of account's mailboxes by reference.
func (s *Store) Copy(ctx context.Context, account string, from uint64, uids state.UIDSet, to uint64) (state.CopyResult, error) {
	if err := s.ownBoth(account, from, to); err != nil {
		return state.CopyResult{}, err
	}
	return propose[state.CopyResult](ctx, s, state.Copy{Time: s.stamp(), SourceMailbox: from, UIDs: uids, DestMailbox: to})
}

// Move moves messages between two of account's mailboxes.
func (s *Store) Move(ctx context.Context, account string, from uint64, uids state.UIDSet, to uint64) (state.CopyResult, error) {
	if err := s.ownBoth(account, from, to); err != nil {
		return state.CopyResult{}, err
	}
	return propose[state.CopyResult](ctx, s, state.Move{Time: s.stamp(), SourceMailbox: from, UIDs: uids, DestMailbox: to})
}

func (s *Store) ownBoth(account string, a, b uint64) error {
	if _, err := s.ownedMailbox(account, a); err != nil {
		return err
	}
	_, err := s.ownedMailbox(account, b)
	return err
}

// Expunge removes messages: with onlyDeleted, those (of uids, or all when
// uids is empty) flagged \Deleted; without, exactly uids.
func (s *Store) Expunge(ctx context.Context, account string, mailboxID uint64, uids state.UIDSet, onlyDeleted bool) (state.ExpungeResult, error) {
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return state.ExpungeResult{}, err
	}
	return propose[state.ExpungeResult](ctx, s, state.Expunge{Time: s.stamp(), MailboxID: mailboxID, UIDs: uids, OnlyDeleted: onlyDeleted})
}

// ClaimRecent marks the mailbox's new messages as seen by one session: UIDs
// at or above the returned watermark are \Recent for it.
func (s *Store) ClaimRecent(ctx context.Context, account string, mailboxID uint64) (state.RecentResult, error) {
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return state.RecentResult{}, err
	}
	return propose[state.RecentResult](ctx, s, state.ClaimRecent{Time: s.stamp(), MailboxID: mailboxID})
}

// Summary decodes the summary parsed from the body at ingest.
func (b Ingested) Summary() (*message.Summary, error) { return message.Unmarshal(b.summary) }
