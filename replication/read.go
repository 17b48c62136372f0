package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// The read methods of the store. Each returns plain values (nothing that
// refers to a transaction) and keeps the consistency rule of DESIGN.md §1
// promise 4 itself: a method that opens a mailbox or answers about one
// the session has not opened waits for a read barrier first, so that it
// shows everything acknowledged anywhere before the call; the others say
// in their doc comment why local state is enough (they follow the
// session's own writes, or a barrier it passed, with this node's change
// feed).

// Mailboxes lists an account's mailboxes.
func (s *Store) Mailboxes(ctx context.Context, account string) ([]state.Mailbox, error) {
	var out []state.Mailbox
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.Mailboxes(account)
		return err
	})
	return out, err
}

// Subscriptions lists the names an account subscribed to.
func (s *Store) Subscriptions(ctx context.Context, account string) ([]string, error) {
	var out []string
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.Subscriptions(account)
		return err
	})
	return out, err
}

// Mailbox returns one mailbox's status from local state.
func (s *Store) Mailbox(ctx context.Context, account, name string) (state.Mailbox, error) {
	var mb state.Mailbox
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		mb, err = tx.Mailbox(account, name)
		return err
	})
	return mb, err
}

// MailboxByID returns a mailbox of account by ID.
func (s *Store) MailboxByID(ctx context.Context, account string, id uint64) (state.Mailbox, error) {
	return s.ownedMailbox(account, id)
}

// OpenedMailbox is a consistent view of a mailbox at the moment it was
// opened: its status and every UID in order (sequence number i is UIDs[i-1]).
type OpenedMailbox struct {
	state.Mailbox
	UIDs []uint32
}

// OpenMailbox waits for a read barrier (so everything acknowledged anywhere
// before the call is visible), then reads the mailbox's status and UIDs in
// one transaction.
func (s *Store) OpenMailbox(ctx context.Context, account, name string) (OpenedMailbox, error) {
	if err := s.Barrier(ctx); err != nil {
		return OpenedMailbox{}, err
	}
	var out OpenedMailbox
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.Mailbox(account, name)
		if err != nil {
			return err
		}
		uids, err := tx.UIDs(mb.ID)
		if err != nil {
			return err
		}
		out = OpenedMailbox{Mailbox: mb, UIDs: uids}
		return nil
	})
	return out, err
}

// Messages streams the records of account's mailbox with UIDs in
// [from, to] (to 0: to the end), in UID order.
func (s *Store) Messages(ctx context.Context, account string, mailboxID uint64, from, to uint32, fn func(state.Message) error) error {
	if _, err := s.ownedMailbox(account, mailboxID); err != nil {
		return err
	}
	if to == 0 {
		to = ^uint32(0)
	}
	return s.fsm.View(func(tx *state.Tx) error {
		return tx.Messages(mailboxID, from, to, func(m state.Message) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(m)
		})
	})
}

// Summary returns the parsed summary stored with a body.
func (s *Store) Summary(ctx context.Context, id state.BlobID) (*message.Summary, error) {
	var raw []byte
	err := s.fsm.View(func(tx *state.Tx) error {
		b, err := tx.Blob(id)
		if err != nil {
			return err
		}
		raw = b.Summary
		return nil
	})
	if err != nil {
		return nil, err
	}
	return message.Unmarshal(raw)
}

// Body is a verified message body: read it with ReadAt, Close it after use.
type Body = blob.Body

// OpenBody returns a verified message body, fetched from a replica when
// this node holds no healthy copy. Close it after use.
func (s *Store) OpenBody(ctx context.Context, id state.BlobID) (*Body, error) {
	b, err := s.bodies.Open(ctx, blob.ID(id))
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrCorrupt) {
			return nil, fmt.Errorf("%w: %v", ErrBodyUnavailable, err)
		}
		return nil, err
	}
	return b, nil
}

// --- opening a mailbox ----------------------------------------------------

// SelectOptions say what SelectMailbox reads besides status and UIDs.
type SelectOptions struct {
	// Children: report whether the mailbox has child mailboxes.
	Children bool
}

// SelectedMailbox is a mailbox as a session opens it (IMAP SELECT and
// EXAMINE): one consistent read, and the change feed from that read on.
type SelectedMailbox struct {
	state.Mailbox
	UIDs []uint32 // every UID in order: sequence number i is UIDs[i-1]
	// Keywords are every keyword set on a message of the mailbox, each
	// spelling once, sorted.
	Keywords    []string
	FirstUnseen uint32 // lowest UID without \Seen, 0: none
	HasChildren bool   // only with SelectOptions.Children
	// Changes announces every change this node applies to the mailbox
	// after the read (events at or below the read's index may repeat what
	// it showed: skip them by index). The caller closes it.
	Changes *Subscription
}

// SelectMailbox opens account's mailbox name for a session. It waits for a
// read barrier first (everything acknowledged anywhere before the call is
// in the view), subscribes to the mailbox's changes and then reads it, so
// no change falls between the view and the feed.
func (s *Store) SelectMailbox(ctx context.Context, account, name string, opts SelectOptions) (SelectedMailbox, error) {
	if err := s.Barrier(ctx); err != nil {
		return SelectedMailbox{}, err
	}
	mb, err := s.Mailbox(ctx, account, name)
	if err != nil {
		return SelectedMailbox{}, err
	}
	out := SelectedMailbox{Changes: s.feed.SubscribeMailbox(mb.ID)}
	err = s.fsm.View(func(tx *state.Tx) error {
		var err error
		if mb, err = tx.MailboxByID(mb.ID); err != nil {
			return err
		}
		if mb.Account != account {
			return ErrNoSuchMailbox
		}
		out.Mailbox = mb
		out.UIDs = make([]uint32, 0, mb.Messages)
		keywords := map[string]struct{}{}
		err = tx.Flags(mb.ID, 1, ^uint32(0), func(uid uint32, f state.Flags, _ uint64) error {
			out.UIDs = append(out.UIDs, uid)
			for _, k := range f.Keywords {
				keywords[k] = struct{}{}
			}
			return nil
		})
		if err != nil {
			return err
		}
		out.Keywords = sortedKeys(keywords)
		if out.FirstUnseen, err = tx.FirstUnseen(mb.ID); err != nil {
			return err
		}
		if opts.Children {
			out.HasChildren, err = hasChildren(tx, account, mb.Name)
		}
		return err
	})
	if err != nil {
		out.Changes.Close()
		return SelectedMailbox{}, err
	}
	return out, nil
}

func hasChildren(tx *state.Tx, account, name string) (bool, error) {
	boxes, err := tx.Mailboxes(account)
	for _, b := range boxes {
		if strings.HasPrefix(b.Name, name+state.HierarchySeparator) {
			return true, err
		}
	}
	return false, err
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// MailboxFlags is the flag state of a whole mailbox.
type MailboxFlags struct {
	HighestModSeq uint64
	UIDs          []uint32 // ascending
	Flags         []state.Flags
	ModSeqs       []uint64
}

// MailboxFlags re-reads the flags of every message in one of account's
// mailboxes (ErrNoSuchMailbox once it is gone). It reads local state without
// a barrier: it is for a session that follows the mailbox through this
// node's change feed since it opened it, and lost some of the feed's events;
// the feed announces only what this node applied, so local state holds all
// of it.
func (s *Store) MailboxFlags(ctx context.Context, account string, mailboxID uint64) (MailboxFlags, error) {
	var out MailboxFlags
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.MailboxByID(mailboxID)
		if err != nil {
			return err
		}
		if mb.Account != account {
			return ErrNoSuchMailbox
		}
		out.HighestModSeq = mb.HighestModSeq
		return tx.Flags(mailboxID, 1, ^uint32(0), func(uid uint32, f state.Flags, modseq uint64) error {
			out.UIDs = append(out.UIDs, uid)
			out.Flags = append(out.Flags, f)
			out.ModSeqs = append(out.ModSeqs, modseq)
			return nil
		})
	})
	if err != nil {
		return MailboxFlags{}, err
	}
	return out, nil
}

// LoadedMessage is one message record read by LoadMessages.
type LoadedMessage struct {
	Found bool // false: no such UID (any more)
	state.Message
	// Summary is the encoded message.Summary stored with the body (only
	// when asked for; nil if the body record is gone); decode it with
	// message.Unmarshal when needed.
	Summary []byte
}

// LoadMessages reads the records of the given UIDs of one of account's
// mailboxes in one consistent read, in the order given (UID 0: not found).
// It reads local state without a barrier: the UIDs come from a view the
// session opened through SelectMailbox and kept up to date from this
// node's change feed, so this node has applied everything they name.
func (s *Store) LoadMessages(ctx context.Context, account string, mailboxID uint64, uids []uint32, withSummary bool) ([]LoadedMessage, error) {
	out := make([]LoadedMessage, len(uids))
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.MailboxByID(mailboxID)
		if err != nil {
			return err
		}
		if mb.Account != account {
			return ErrNoSuchMailbox
		}
		for i, uid := range uids {
			if uid == 0 {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := tx.Message(mailboxID, uid)
			if errors.Is(err, state.ErrNoSuchMessage) {
				continue
			}
			if err != nil {
				return err
			}
			out[i] = LoadedMessage{Found: true, Message: m}
			if withSummary {
				if b, err := tx.Blob(m.Blob); err == nil {
					out[i].Summary = b.Summary
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// HasMessage reports whether one of account's mailboxes still holds uid
// (false, not an error, once the mailbox is gone). It reads local state
// without a barrier: it answers for a session that opened the mailbox
// through a barrier, about a message it saw then; a removal this node has
// not applied yet is one the session could not have known of either.
func (s *Store) HasMessage(ctx context.Context, account string, mailboxID uint64, uid uint32) (bool, error) {
	found := false
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.MailboxByID(mailboxID)
		if errors.Is(err, state.ErrNoSuchMailbox) {
			return nil
		}
		if err != nil {
			return err
		}
		if mb.Account != account {
			return nil
		}
		_, err = tx.Message(mailboxID, uid)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, state.ErrNoSuchMessage):
		default:
			return err
		}
		return nil
	})
	return found, err
}

// OpenedMessages is a mailbox with every message record, in UID order.
type OpenedMessages struct {
	state.Mailbox
	Messages []state.Message
}

// OpenMessages opens account's mailbox name with all its message records
// (a POP3 maildrop). It waits for a read barrier first, so the view holds
// everything acknowledged anywhere before the call.
func (s *Store) OpenMessages(ctx context.Context, account, name string) (OpenedMessages, error) {
	if err := s.Barrier(ctx); err != nil {
		return OpenedMessages{}, err
	}
	var out OpenedMessages
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.Mailbox(account, name)
		if err != nil {
			return err
		}
		out = OpenedMessages{Mailbox: mb, Messages: make([]state.Message, 0, mb.Messages)}
		return tx.Messages(mb.ID, 1, ^uint32(0), func(m state.Message) error {
			out.Messages = append(out.Messages, m)
			return nil
		})
	})
	if err != nil {
		return OpenedMessages{}, err
	}
	return out, nil
}

// --- status and listing -----------------------------------------------------

// StatusItems say which of the costlier STATUS figures to compute; the
// counters in state.Mailbox come always.
type StatusItems struct {
	Recent      bool // messages at or above the recent watermark
	DeletedSize bool // total size of the \Deleted messages
}

// MailboxStatus is a mailbox's status with the figures asked for.
type MailboxStatus struct {
	state.Mailbox
	Recent      uint32
	DeletedSize int64
}

// MailboxStatus answers about account's mailbox name (IMAP STATUS). It
// waits for a read barrier first, so the figures include everything
// acknowledged anywhere before the call.
func (s *Store) MailboxStatus(ctx context.Context, account, name string, items StatusItems) (MailboxStatus, error) {
	if err := s.Barrier(ctx); err != nil {
		return MailboxStatus{}, err
	}
	var out MailboxStatus
	err := s.fsm.View(func(tx *state.Tx) error {
		mb, err := tx.Mailbox(account, name)
		if err != nil {
			return err
		}
		out, err = statusOf(tx, mb, items)
		return err
	})
	return out, err
}

func statusOf(tx *state.Tx, mb state.Mailbox, items StatusItems) (MailboxStatus, error) {
	out := MailboxStatus{Mailbox: mb}
	if items.Recent && mb.RecentWatermark < mb.UIDNext {
		err := tx.Flags(mb.ID, mb.RecentWatermark, ^uint32(0), func(uint32, state.Flags, uint64) error {
			out.Recent++
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	if items.DeletedSize {
		uids, err := tx.Deleted(mb.ID)
		if err != nil {
			return out, err
		}
		for _, uid := range uids {
			if m, err := tx.Message(mb.ID, uid); err == nil {
				out.DeletedSize += m.Size
			}
		}
	}
	return out, nil
}

// ListOptions say what ListMailboxes reads besides names and
// subscriptions.
type ListOptions struct {
	// Status, if set, asks for the status of every mailbox Want accepts
	// (all when Want is nil), as MailboxStatus computes it. Want runs inside
	// the read: it must not call the store.
	Status *StatusItems
	Want   func(name string) bool
}

// Listing is an account's mailboxes and subscriptions from one read.
type Listing struct {
	Mailboxes     []state.Mailbox // in name order
	Subscriptions []string        // may name mailboxes that do not exist
	Status        map[uint64]MailboxStatus
}

// listBarrierWait bounds how long a listing without status waits for the
// read barrier before it answers from this node's own state.
const listBarrierWait = 2 * time.Second

// ListMailboxes lists account's mailboxes and subscriptions (IMAP LIST,
// LSUB). It shows what was acknowledged anywhere before the call: with
// Status it waits for a read barrier like MailboxStatus (and fails without
// one); without, it waits at most two seconds for the barrier and then
// answers from this node's own state (possibly a little stale) rather than
// nothing, so a node cut off from the majority still lists mailboxes.
func (s *Store) ListMailboxes(ctx context.Context, account string, opts ListOptions) (Listing, error) {
	if opts.Status != nil {
		if err := s.Barrier(ctx); err != nil {
			return Listing{}, err
		}
	} else {
		bctx, cancel := context.WithTimeout(ctx, listBarrierWait)
		_ = s.Barrier(bctx)
		cancel()
	}
	var out Listing
	err := s.fsm.View(func(tx *state.Tx) error {
		var err error
		if out.Mailboxes, err = tx.Mailboxes(account); err != nil {
			return err
		}
		if out.Subscriptions, err = tx.Subscriptions(account); err != nil {
			return err
		}
		if opts.Status == nil {
			return nil
		}
		out.Status = map[uint64]MailboxStatus{}
		for _, mb := range out.Mailboxes {
			if opts.Want != nil && !opts.Want(mb.Name) {
				continue
			}
			if out.Status[mb.ID], err = statusOf(tx, mb, *opts.Status); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Listing{}, err
	}
	return out, nil
}
