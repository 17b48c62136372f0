package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Command is one state change, proposed through Raft. Each command carries
// Time, the proposer's clock in unix nanoseconds: Apply uses it wherever it
// needs "now" (creation times, UIDVALIDITY, zero-since of blobs).
//
// Encoding: one type byte, then the JSON payload. A type byte names one
// payload shape forever: a changed meaning gets a new byte, never a new
// field under an old byte (Apply rejects unknown fields so an old node stops
// instead of silently ignoring them).
type Command interface {
	commandType() byte
}

// Command type bytes. Never renumber or reuse.
const (
	typeAddDomain          byte = 0x01
	typeDeleteDomain       byte = 0x02
	typeSetCatchAll        byte = 0x03
	typeAddAccount         byte = 0x10
	typeDeleteAccount      byte = 0x11
	typeSetPassword        byte = 0x12
	typeSetQuota           byte = 0x13
	typeSetAccountDisabled byte = 0x14
	typeSetForwarding      byte = 0x15
	typeSetAlias           byte = 0x20
	typeDeleteAlias        byte = 0x21
	typeCreateMailbox      byte = 0x30
	typeDeleteMailbox      byte = 0x31
	typeRenameMailbox      byte = 0x32
	typeSetSubscribed      byte = 0x33
	typeDeliver            byte = 0x40
	typeAppend             byte = 0x41
	typeCopy               byte = 0x42
	typeMove               byte = 0x43
	typeSetFlags           byte = 0x44
	typeExpunge            byte = 0x45
	typeClaimRecent        byte = 0x46
	typePurgeBlobs         byte = 0x50
)

// AddDomain makes a domain local. Result: Done.
type AddDomain struct {
	Time int64  `json:"t"`
	Name string `json:"name"`
}

// DeleteDomain removes a domain that has no accounts and no aliases left
// (ErrDomainNotEmpty otherwise). Result: Done.
type DeleteDomain struct {
	Time int64  `json:"t"`
	Name string `json:"name"`
}

// SetCatchAll sets the address that receives mail for unknown local parts of
// Domain; an empty Target clears it. Result: Done.
type SetCatchAll struct {
	Time   int64  `json:"t"`
	Domain string `json:"domain"`
	Target string `json:"target,omitempty"`
}

// AddAccount creates an account with INBOX, Drafts, Sent, Trash, Junk and
// Archive, all subscribed. PasswordHash is opaque (argon2id, made by the
// proposer). Quotas of 0 mean unlimited. Result: AccountResult.
type AddAccount struct {
	Time          int64  `json:"t"`
	Address       string `json:"address"`
	PasswordHash  string `json:"password_hash"`
	QuotaBytes    int64  `json:"quota_bytes,omitempty"`
	QuotaMessages int64  `json:"quota_messages,omitempty"`
}

// DeleteAccount removes an account, its mailboxes, messages and
// subscriptions, and releases its blob references. Result: Done.
type DeleteAccount struct {
	Time    int64  `json:"t"`
	Address string `json:"address"`
}

// SetPassword replaces the stored hash. Result: Done.
type SetPassword struct {
	Time         int64  `json:"t"`
	Address      string `json:"address"`
	PasswordHash string `json:"password_hash"`
}

// SetQuota sets the limits (0 = unlimited); existing mail is kept even when
// over the new limit. Result: Done.
type SetQuota struct {
	Time          int64  `json:"t"`
	Address       string `json:"address"`
	QuotaBytes    int64  `json:"quota_bytes,omitempty"`
	QuotaMessages int64  `json:"quota_messages,omitempty"`
}

// SetAccountDisabled blocks or unblocks logins and delivery. Result: Done.
type SetAccountDisabled struct {
	Time     int64  `json:"t"`
	Address  string `json:"address"`
	Disabled bool   `json:"disabled"`
}

// SetForwarding sets where the account's mail is forwarded (empty: no
// forwarding) and whether a local copy is kept. Result: Done.
type SetForwarding struct {
	Time      int64    `json:"t"`
	Address   string   `json:"address"`
	Targets   []string `json:"targets,omitempty"`
	KeepLocal bool     `json:"keep_local,omitempty"`
}

// SetAlias creates or replaces (upsert) the alias Address → Targets.
// Targets are local accounts, other aliases or external addresses.
// ErrAccountExists if an account has the address. Result: Done.
type SetAlias struct {
	Time    int64    `json:"t"`
	Address string   `json:"address"`
	Targets []string `json:"targets"`
}

// DeleteAlias removes an alias (ErrNoSuchAlias if absent). Result: Done.
type DeleteAlias struct {
	Time    int64  `json:"t"`
	Address string `json:"address"`
}

// CreateMailbox creates a mailbox and any missing parents (parents get no
// special use and are not subscribed). Result: MailboxResult.
type CreateMailbox struct {
	Time       int64      `json:"t"`
	Account    string     `json:"account"`
	Name       string     `json:"name"`
	SpecialUse SpecialUse `json:"special_use,omitempty"`
	Subscribe  bool       `json:"subscribe,omitempty"`
}

// DeleteMailbox deletes a mailbox without children and its messages. INBOX
// cannot be deleted; subscriptions are left alone (RFC 3501). Result: Done.
type DeleteMailbox struct {
	Time    int64  `json:"t"`
	Account string `json:"account"`
	Name    string `json:"name"`
}

// RenameMailbox renames a mailbox and all its children, keeping their IDs
// and UIDVALIDITY, creating missing parents of the new name and moving
// subscriptions of renamed names along. Renaming INBOX instead creates the
// new mailbox, moves INBOX's messages into it with new UIDs and leaves INBOX
// empty; INBOX's children stay. Result: MailboxResult (the renamed mailbox,
// or the new one for INBOX).
type RenameMailbox struct {
	Time    int64  `json:"t"`
	Account string `json:"account"`
	OldName string `json:"old_name"`
	NewName string `json:"new_name"`
}

// SetSubscribed adds or removes a name from the account's subscriptions;
// the mailbox need not exist. Result: Done.
type SetSubscribed struct {
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
	Time          int64  `json:"t"`
	SourceMailbox uint64 `json:"src"`
	UIDs          UIDSet `json:"uids"`
	DestMailbox   uint64 `json:"dst"`
}

// Move is Copy followed by expunging the originals, without a quota check.
// Source and destination must differ. Result: CopyResult.
type Move struct {
	Time          int64  `json:"t"`
	SourceMailbox uint64 `json:"src"`
	UIDs          UIDSet `json:"uids"`
	DestMailbox   uint64 `json:"dst"`
}

// SetFlags changes flags (IMAP STORE). Missing UIDs are skipped. With
// UnchangedSince set (CONDSTORE), messages whose MODSEQ is above it are left
// alone and reported as Modified. Result: FlagsResult.
type SetFlags struct {
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
	Time        int64  `json:"t"`
	MailboxID   uint64 `json:"mailbox"`
	UIDs        UIDSet `json:"uids,omitempty"`
	OnlyDeleted bool   `json:"only_deleted,omitempty"`
}

// ClaimRecent returns the mailbox's recent watermark and moves it to
// UIDNEXT: messages with UID ≥ the returned watermark are \Recent for the
// session that claimed them. Result: RecentResult.
type ClaimRecent struct {
	Time      int64  `json:"t"`
	MailboxID uint64 `json:"mailbox"`
}

// PurgeBlobs forgets blob records with no references whose count reached
// zero before Before (unix nanos), oldest first, at most Limit (0: all).
// Result: PurgeResult listing the forgotten blobs, whose files may go.
type PurgeBlobs struct {
	Time   int64 `json:"t"`
	Before int64 `json:"before"`
	Limit  int   `json:"limit,omitempty"`
}

func (AddDomain) commandType() byte          { return typeAddDomain }
func (DeleteDomain) commandType() byte       { return typeDeleteDomain }
func (SetCatchAll) commandType() byte        { return typeSetCatchAll }
func (AddAccount) commandType() byte         { return typeAddAccount }
func (DeleteAccount) commandType() byte      { return typeDeleteAccount }
func (SetPassword) commandType() byte        { return typeSetPassword }
func (SetQuota) commandType() byte           { return typeSetQuota }
func (SetAccountDisabled) commandType() byte { return typeSetAccountDisabled }
func (SetForwarding) commandType() byte      { return typeSetForwarding }
func (SetAlias) commandType() byte           { return typeSetAlias }
func (DeleteAlias) commandType() byte        { return typeDeleteAlias }
func (CreateMailbox) commandType() byte      { return typeCreateMailbox }
func (DeleteMailbox) commandType() byte      { return typeDeleteMailbox }
func (RenameMailbox) commandType() byte      { return typeRenameMailbox }
func (SetSubscribed) commandType() byte      { return typeSetSubscribed }
func (Deliver) commandType() byte            { return typeDeliver }
func (Append) commandType() byte             { return typeAppend }
func (Copy) commandType() byte               { return typeCopy }
func (Move) commandType() byte               { return typeMove }
func (SetFlags) commandType() byte           { return typeSetFlags }
func (Expunge) commandType() byte            { return typeExpunge }
func (ClaimRecent) commandType() byte        { return typeClaimRecent }
func (PurgeBlobs) commandType() byte         { return typePurgeBlobs }

// Encode turns a command into the bytes to propose.
func Encode(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("state: encode nil command")
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("state: encode %T: %w", cmd, err)
	}
	out := make([]byte, 0, 1+len(payload))
	out = append(out, cmd.commandType())
	return append(out, payload...), nil
}

// Decode parses bytes made by Encode into a pointer (*Deliver, …). An
// unknown type byte gives
// ErrUnknownCommand; a payload with unknown fields is an error too.
func Decode(data []byte) (Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrUnknownCommand)
	}
	var cmd Command
	switch data[0] {
	case typeAddDomain:
		cmd = &AddDomain{}
	case typeDeleteDomain:
		cmd = &DeleteDomain{}
	case typeSetCatchAll:
		cmd = &SetCatchAll{}
	case typeAddAccount:
		cmd = &AddAccount{}
	case typeDeleteAccount:
		cmd = &DeleteAccount{}
	case typeSetPassword:
		cmd = &SetPassword{}
	case typeSetQuota:
		cmd = &SetQuota{}
	case typeSetAccountDisabled:
		cmd = &SetAccountDisabled{}
	case typeSetForwarding:
		cmd = &SetForwarding{}
	case typeSetAlias:
		cmd = &SetAlias{}
	case typeDeleteAlias:
		cmd = &DeleteAlias{}
	case typeCreateMailbox:
		cmd = &CreateMailbox{}
	case typeDeleteMailbox:
		cmd = &DeleteMailbox{}
	case typeRenameMailbox:
		cmd = &RenameMailbox{}
	case typeSetSubscribed:
		cmd = &SetSubscribed{}
	case typeDeliver:
		cmd = &Deliver{}
	case typeAppend:
		cmd = &Append{}
	case typeCopy:
		cmd = &Copy{}
	case typeMove:
		cmd = &Move{}
	case typeSetFlags:
		cmd = &SetFlags{}
	case typeExpunge:
		cmd = &Expunge{}
	case typeClaimRecent:
		cmd = &ClaimRecent{}
	case typePurgeBlobs:
		cmd = &PurgeBlobs{}
	default:
		return nil, fmt.Errorf("%w 0x%02x", ErrUnknownCommand, data[0])
	}
	dec := json.NewDecoder(bytes.NewReader(data[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cmd); err != nil {
		return nil, fmt.Errorf("state: decode command 0x%02x: %w", data[0], err)
	}
	if dec.More() {
		return nil, fmt.Errorf("state: decode command 0x%02x: trailing data", data[0])
	}
	return cmd, nil
}
