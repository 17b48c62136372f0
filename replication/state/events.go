package state

// Event is a change made by one applied command, delivered to
// Options.OnCommit after the batch's transaction commits, in log order.
// Index is the Raft index of the command that caused it.
type Event interface {
	EventIndex() uint64
}

// MessageAdded: a message appeared (deliver, append, copy, move, INBOX
// rename).
type MessageAdded struct {
	Index     uint64
	Account   string
	MailboxID uint64
	UID       uint32
	ModSeq    uint64
	Flags     Flags
	Size      int64
}

// FlagsChanged: a message's flags changed; Flags is the full new set.
type FlagsChanged struct {
	Index     uint64
	Account   string
	MailboxID uint64
	UID       uint32
	Flags     Flags
	ModSeq    uint64
}

// Expunged: messages were removed from a mailbox (expunge, move, INBOX
// rename). UIDs are ascending. ModSeq is the mailbox's new HIGHESTMODSEQ.
type Expunged struct {
	Index     uint64
	Account   string
	MailboxID uint64
	UIDs      []uint32
	ModSeq    uint64
}

// MailboxCreated: a mailbox was created (also parents created implicitly).
type MailboxCreated struct {
	Index     uint64
	Account   string
	MailboxID uint64
	Name      string
}

// MailboxRenamed: a mailbox kept its ID and got a new name.
type MailboxRenamed struct {
	Index     uint64
	Account   string
	MailboxID uint64
	OldName   string
	NewName   string
}

// MailboxDeleted: a mailbox and its messages are gone (also when its account
// was deleted).
type MailboxDeleted struct {
	Index     uint64
	Account   string
	MailboxID uint64
	Name      string
}

// AccountChanged: an account was added or its settings changed (password,
// quota, disabled, forwarding). Sessions of a disabled account should end.
type AccountChanged struct {
	Index   uint64
	Account string
}

// AccountDeleted: an account is gone.
type AccountDeleted struct {
	Index   uint64
	Account string
}

// DomainChanged: a domain, its catch-all or its aliases changed.
type DomainChanged struct {
	Index   uint64
	Domain  string
	Deleted bool
}

// BlobsPurged: these blobs have no record any more; their files may go.
type BlobsPurged struct {
	Index uint64
	Blobs []BlobID
}

// QueueChanged: queue entries were added or made due at once (a delivery
// or bounce queued them, an operator retried or bounced them): a worker
// may claim them now.
type QueueChanged struct {
	Index uint64
	Due   []QueueID
}

// QueueTicked: the queue clock moved forward to Now; entries whose next
// attempt or lease it passed may be claimed.
type QueueTicked struct {
	Index uint64
	Now   int64
}

func (e MessageAdded) EventIndex() uint64   { return e.Index }
func (e FlagsChanged) EventIndex() uint64   { return e.Index }
func (e Expunged) EventIndex() uint64       { return e.Index }
func (e MailboxCreated) EventIndex() uint64 { return e.Index }
func (e MailboxRenamed) EventIndex() uint64 { return e.Index }
func (e MailboxDeleted) EventIndex() uint64 { return e.Index }
func (e AccountChanged) EventIndex() uint64 { return e.Index }
func (e AccountDeleted) EventIndex() uint64 { return e.Index }
func (e DomainChanged) EventIndex() uint64  { return e.Index }
func (e BlobsPurged) EventIndex() uint64    { return e.Index }
func (e QueueChanged) EventIndex() uint64   { return e.Index }
func (e QueueTicked) EventIndex() uint64    { return e.Index }
