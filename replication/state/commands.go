package state

import "time"

// AddDomain makes a domain local. Result: Done.
type AddDomain struct {
	command
	Time int64  `json:"t"`
	Name string `json:"name"`
}

// DeleteDomain removes a domain that has no accounts and no aliases left
// (ErrDomainNotEmpty otherwise). Result: Done.
type DeleteDomain struct {
	command
	Time int64  `json:"t"`
	Name string `json:"name"`
}

// SetCatchAll sets the address that receives mail for unknown local parts of
// Domain; an empty Target clears it. Result: Done.
type SetCatchAll struct {
	command
	Time   int64  `json:"t"`
	Domain string `json:"domain"`
	Target string `json:"target,omitempty"`
}

// AddAccount creates an account with INBOX, Drafts, Sent, Trash, Junk and
// Archive, all subscribed. PasswordHash is opaque (argon2id, made by the
// proposer). Quotas of 0 mean unlimited. Result: AccountResult.
type AddAccount struct {
	command
	Time          int64  `json:"t"`
	Address       string `json:"address"`
	PasswordHash  string `json:"password_hash"`
	QuotaBytes    int64  `json:"quota_bytes,omitempty"`
	QuotaMessages int64  `json:"quota_messages,omitempty"`
}

// DeleteAccount removes an account, its mailboxes, messages,
// subscriptions and spam counts (the cluster-wide counts keep what it
// taught), and releases its blob references. Result: Done.
type DeleteAccount struct {
	command
	Time    int64  `json:"t"`
	Address string `json:"address"`
}

// SetPassword replaces the stored hash. Result: Done.
type SetPassword struct {
	command
	Time         int64  `json:"t"`
	Address      string `json:"address"`
	PasswordHash string `json:"password_hash"`
}

// SetQuota sets the limits (0 = unlimited); existing mail is kept even when
// over the new limit. Result: Done.
type SetQuota struct {
	command
	Time          int64  `json:"t"`
	Address       string `json:"address"`
	QuotaBytes    int64  `json:"quota_bytes,omitempty"`
	QuotaMessages int64  `json:"quota_messages,omitempty"`
}

// SetAccountDisabled blocks or unblocks logins and delivery. Result: Done.
type SetAccountDisabled struct {
	command
	Time     int64  `json:"t"`
	Address  string `json:"address"`
	Disabled bool   `json:"disabled"`
}

// SetForwarding sets where the account's mail is forwarded (empty: no
// forwarding) and whether a local copy is kept. Result: Done.
type SetForwarding struct {
	command
	Time      int64    `json:"t"`
	Address   string   `json:"address"`
	Targets   []string `json:"targets,omitempty"`
	KeepLocal bool     `json:"keep_local,omitempty"`
}

// SetAlias creates or replaces (upsert) the alias Address → Targets.
// Targets are local accounts, other aliases or external addresses.
// ErrAccountExists if an account has the address. Result: Done.
type SetAlias struct {
	command
	Time    int64    `json:"t"`
	Address string   `json:"address"`
	Targets []string `json:"targets"`
}

// DeleteAlias removes an alias (ErrNoSuchAlias if absent). Result: Done.
type DeleteAlias struct {
	command
	Time    int64  `json:"t"`
	Address string `json:"address"`
}

// CreateMailbox creates a mailbox and any missing parents (parents get no
// special use and are not subscribed). With MaxMailboxes set (filled in by
// the proposer from its configuration) the account may not end up with more
// mailboxes than that: ErrTooManyMailboxes. Result: MailboxResult.
type CreateMailbox struct {
	command
	Time         int64      `json:"t"`
	Account      string     `json:"account"`
	Name         string     `json:"name"`
	SpecialUse   SpecialUse `json:"special_use,omitempty"`
	Subscribe    bool       `json:"subscribe,omitempty"`
	MaxMailboxes int        `json:"max_mailboxes,omitempty"` // 0: no limit (every entry before the limit existed)
}

// DeleteMailbox deletes a mailbox without children and its messages. INBOX
// cannot be deleted; subscriptions are left alone (RFC 3501). Result: Done.
type DeleteMailbox struct {
	command
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Name    string `json:"name"`
}

// RenameMailbox renames a mailbox and all its children, keeping their IDs
// and UIDVALIDITY, creating missing parents of the new name and moving
// subscriptions of renamed names along. Renaming INBOX instead creates the
// new mailbox, moves INBOX's messages into it with new UIDs and leaves INBOX
// empty; INBOX's children stay. Result: MailboxResult (the renamed mailbox,
// or the new one for INBOX). MaxMailboxes limits the account's mailboxes
// as for CreateMailbox when the rename creates any (parents, or INBOX's new
// mailbox).
type RenameMailbox struct {
	command
	Time         int64  `json:"t"`
	Account      string `json:"account"`
	OldName      string `json:"old_name"`
	NewName      string `json:"new_name"`
	MaxMailboxes int    `json:"max_mailboxes,omitempty"` // 0: no limit
}

// SetSubscribed adds or removes a name from the account's subscriptions;
// the mailbox need not exist. Result: Done.
type SetSubscribed struct {
	command
	Time       int64  `json:"t"`
	Account    string `json:"account"`
	Name       string `json:"name"`
	Subscribed bool   `json:"subscribed"`
}

// DeliverTarget is one copy of a delivered message.
type DeliverTarget struct {
	Account string `json:"account"`
	// Mailbox is a name; empty, invalid or absent means INBOX.
	Mailbox string `json:"mailbox,omitempty"`
	Flags   Flags  `json:"flags,omitzero"`
}

// Deliver stores one blob in several mailboxes and queues it for
// recipients outside the cluster, in one commit. Each local target succeeds
// or fails alone (no such account, disabled, quota exceeded); each Remote
// target becomes one queue entry, due at once (NextAttempt = the queue
// clock), with ID {this entry's index, its ordinal in Remote}. The blob is
// referenced once per stored copy and once per queue entry, so GC never
// removes a queued body. Result: DeliverResult, one entry per target in
// order, and the queue IDs in Remote's order.
type Deliver struct {
	command
	Time         int64           `json:"t"`
	Blob         BlobID          `json:"blob"`
	Size         int64           `json:"size"`
	Summary      []byte          `json:"summary,omitempty"`
	InternalDate time.Time       `json:"internal_date,omitzero"` // zero: Time
	Targets      []DeliverTarget `json:"targets"`
	// Remote: recipients outside the cluster (omitted: none, as in every
	// entry written before the queue existed).
	Remote []QueueTarget `json:"remote,omitempty"`
}

// Append stores one message in a mailbox of Account (IMAP APPEND); quota is
// enforced. Result: AppendResult.
type Append struct {
	command
	Time         int64     `json:"t"`
	Account      string    `json:"account"`
	MailboxID    uint64    `json:"mailbox"`
	Blob         BlobID    `json:"blob"`
	Size         int64     `json:"size"`
	Summary      []byte    `json:"summary,omitempty"`
	Flags        Flags     `json:"flags,omitzero"`
	InternalDate time.Time `json:"internal_date,omitzero"` // zero: Time
}

// Copy copies messages by reference, keeping flags and internal dates.
// UIDs that no longer exist are skipped. The destination account's quota
// must hold all copies, else nothing is copied. Result: CopyResult.
type Copy struct {
	command
	Time          int64  `json:"t"`
	SourceMailbox uint64 `json:"src"`
	UIDs          UIDSet `json:"uids"`
	DestMailbox   uint64 `json:"dst"`
}

// Move is Copy followed by expunging the originals, without a quota check.
// Source and destination must differ. Result: CopyResult.
type Move struct {
	command
	Time          int64  `json:"t"`
	SourceMailbox uint64 `json:"src"`
	UIDs          UIDSet `json:"uids"`
	DestMailbox   uint64 `json:"dst"`
}

// SetFlags changes flags (IMAP STORE). Missing UIDs are skipped. With
// UnchangedSince set (CONDSTORE), messages whose MODSEQ is above it are left
// alone and reported as Modified. Result: FlagsResult.
type SetFlags struct {
	command
	Time           int64   `json:"t"`
	MailboxID      uint64  `json:"mailbox"`
	UIDs           UIDSet  `json:"uids"`
	Op             FlagOp  `json:"op"`
	Flags          Flags   `json:"flags,omitzero"`
	UnchangedSince *uint64 `json:"unchanged_since,omitempty"`
}

// Expunge removes messages. OnlyDeleted with no UIDs: every \Deleted
// message (IMAP EXPUNGE). OnlyDeleted with UIDs: those that are \Deleted
// (UID EXPUNGE). Without OnlyDeleted: exactly the given UIDs (POP3); no UIDs
// then removes nothing. Result: ExpungeResult.
type Expunge struct {
	command
	Time        int64  `json:"t"`
	MailboxID   uint64 `json:"mailbox"`
	UIDs        UIDSet `json:"uids,omitempty"`
	OnlyDeleted bool   `json:"only_deleted,omitempty"`
}

// ClaimRecent returns the mailbox's recent watermark and moves it to
// UIDNEXT: messages with UID ≥ the returned watermark are \Recent for the
// session that claimed them. Result: RecentResult.
type ClaimRecent struct {
	command
	Time      int64  `json:"t"`
	MailboxID uint64 `json:"mailbox"`
}

// PurgeBlobs forgets blob records with no references whose count reached
// zero before Before (unix nanos), oldest first, at most Limit (0: all).
// Result: PurgeResult listing the forgotten blobs, whose files may go.
type PurgeBlobs struct {
	command
	Time   int64 `json:"t"`
	Before int64 `json:"before"`
	Limit  int   `json:"limit,omitempty"`
}

// QueueTarget is one recipient outside the cluster, as the proposer filled
// it in from the submission and its configuration.
type QueueTarget struct {
	From    string `json:"from,omitempty"`  // envelope sender on the wire; "" = null sender (a DSN)
	To      string `json:"to"`              // the outside recipient
	ORCPT   string `json:"orcpt,omitempty"` // RFC 3461 ORCPT (addr-type;addr), "" if none
	Notify  uint8  `json:"notify,omitempty"`
	Ret     string `json:"ret,omitempty"` // "FULL", "HDRS" or ""
	EnvID   string `json:"envid,omitempty"`
	Account string `json:"account,omitempty"` // the submitting account; "" for a forward or a bounce
	UTF8    bool   `json:"utf8,omitempty"`
	// Expires (unix nanos): past it the entry fails for good. DelayDSNAt:
	// one "delayed" DSN once an attempt fails after it; 0: never.
	Expires    int64 `json:"expires,omitempty"`
	DelayDSNAt int64 `json:"delay_dsn_at,omitempty"`
}

// QueueTick advances the queue clock to Time (it never goes back): the
// clock lease expiry and due times are judged by. Proposed only by the
// leader, whose Time is its own clock. Result: Done.
type QueueTick struct {
	command
	Time int64 `json:"t"`
}

// QueueClaim leases due work to Node. For each ID that exists, is due
// (NextAttempt <= queue clock) and is not leased (or its lease ran out,
// Until <= queue clock): Lease = {Node, Token: this entry's log index,
// Until: queue clock + Lease}, Attempts+1. Result: ClaimResult.
type QueueClaim struct {
	command
	Time  int64     `json:"t"`
	Node  string    `json:"node"`
	IDs   []QueueID `json:"ids"`
	Lease int64     `json:"lease"` // nanoseconds, > 0
}

// QueueRenew extends to queue clock + Lease the leases of the entries among
// IDs whose lease token is Token. Result: RenewResult (the IDs still held).
type QueueRenew struct {
	command
	Time  int64     `json:"t"`
	Token uint64    `json:"token"`
	IDs   []QueueID `json:"ids"`
	Lease int64     `json:"lease"` // nanoseconds, > 0
}

// QueueReport records the outcome of attempts made under the lease Token.
// An outcome for an entry that is gone or leased under another token is
// refused (its result says so; nothing of it is written). Delivered and
// Failed remove the entry (and its blob reference); Deferred clears the
// lease and sets NextAttempt, LastReply and LastHost. An outcome's Bounce
// (a DSN already durable on W) is stored in the same transaction. Result:
// ReportResult, one OutcomeResult per outcome in order.
type QueueReport struct {
	command
	Time     int64          `json:"t"`
	Token    uint64         `json:"token"`
	Outcomes []QueueOutcome `json:"outcomes"`
}

// OutcomeKind is what an attempt did for one recipient.
type OutcomeKind uint8

const (
	OutcomeDelivered OutcomeKind = 1 // the remote took it: the entry goes
	OutcomeDeferred  OutcomeKind = 2 // try again at NextAttempt
	OutcomeFailed    OutcomeKind = 3 // permanent failure or expiry: the entry goes
)

// QueueOutcome is the result of one attempt for one queue entry.
type QueueOutcome struct {
	ID          QueueID     `json:"id"`
	Kind        OutcomeKind `json:"kind"`
	Reply       string      `json:"reply,omitempty"` // "451 4.3.0 text", or a local reason
	Host        string      `json:"host,omitempty"`
	NextAttempt int64       `json:"next_attempt,omitempty"` // Deferred: unix nanos on the queue clock
	Bounce      *Bounce     `json:"bounce,omitempty"`
}

// Bounce kinds.
const (
	BounceFailed    = "failed"
	BounceDelayed   = "delayed"   // also sets the entry's DelayDSNSent
	BounceDelivered = "delivered" // a success DSN (NOTIFY=SUCCESS)
)

// Bounce is a delivery status notification the reporter composed and made
// durable on W: stored as local copies (as Deliver does) and/or queue
// entries (From "" for a null sender), in the report's transaction, so a
// DSN exists exactly once.
type Bounce struct {
	Kind    string          `json:"kind"`
	Blob    BlobID          `json:"blob"`
	Size    int64           `json:"size"`
	Summary []byte          `json:"summary,omitempty"`
	Local   []DeliverTarget `json:"local,omitempty"`
	Remote  []QueueTarget   `json:"remote,omitempty"`
}

// Queue admin operations.
const (
	QueueRetry  = "retry"  // due now; an unexpired lease is kept (see QueueAdmin)
	QueueBounce = "bounce" // due now, marked Bounce: the worker fails it with a DSN
	QueueDelete = "delete" // removed without a DSN
)

// QueueAdmin is an operator's action on queue entries. retry: NextAttempt
// := queue clock, and the lease is cleared unless it is still running (an
// attempt in progress keeps its lease, so no second node talks to the
// remote for the same recipient at once; its report then decides). bounce:
// Bounce := true and NextAttempt := queue clock. delete: the entry goes
// (blob unreferenced). IDs that do not exist are skipped. Result:
// QueueAdminResult.
type QueueAdmin struct {
	command
	Time int64     `json:"t"`
	Op   string    `json:"op"`
	IDs  []QueueID `json:"ids"`
}
