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

// DeleteAccount removes an account, its mailboxes, messages and
// subscriptions, and releases its blob references. Result: Done.
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

// Deliver stores one blob in several mailboxes. Each target succeeds or
// fails alone (no such account, disabled, quota exceeded); the blob is
// referenced once per stored copy. Result: DeliverResult, one entry per
// target in order.
type Deliver struct {
	command
	Time         int64           `json:"t"`
	Blob         BlobID          `json:"blob"`
	Size         int64           `json:"size"`
	Summary      []byte          `json:"summary,omitempty"`
	InternalDate time.Time       `json:"internal_date,omitzero"` // zero: Time
	Targets      []DeliverTarget `json:"targets"`
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
