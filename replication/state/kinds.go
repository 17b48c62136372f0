package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Command is one state change, proposed through Raft: one of the payload
// types listed in commandKinds. Each carries Time, the proposer's clock in
// unix nanoseconds: Apply uses it wherever it needs "now" (creation times,
// UIDVALIDITY, zero-since of blobs).
//
// Encoding: one type byte, then the JSON payload. A type byte names one
// payload shape forever: a changed meaning gets a new byte, never a new
// field under an old byte (Apply rejects unknown fields so an old node stops
// instead of silently ignoring them). The one exception is a field whose
// zero value (omitted) means exactly what the old payload meant, such as
// CreateMailbox's MaxMailboxes: old entries keep decoding the same, and an
// old node meets the field only in entries it must not apply anyway.
type Command interface{ isCommand() }

// command is embedded in every command type, which makes it a Command. It
// has no fields, so it adds nothing to the encoding.
type command struct{}

func (command) isCommand() {}

// ignoreIfUnknown is the high bit of the type byte (hashicorp/nomad's
// IgnoreUnknownTypeFlag): a node that does not know the kind skips the
// entry, logging it once, instead of stopping. Only an advisory kind may set
// it: one whose absence on an older node changes nothing that another
// command's outcome or any read depends on (a hint, a statistic). Every
// type byte below 0x80 written so far has it clear, so old logs and
// snapshots read as before.
const ignoreIfUnknown byte = 0x80

// kindFlags say what a kind may touch, written out in every table entry.
type kindFlags uint8

const (
	// addressing: the command may change how a recipient address resolves,
	// whether it takes mail or who may log in (domains, accounts, aliases,
	// forwarding, quotas, the disabled flag, passwords, sieve scripts): the read barrier of
	// ScopeAddressing waits for it. When in doubt, say addressing: waiting
	// too long is safe, missing a change is not.
	addressing kindFlags = 1 << iota
	// mailOnly: the command changes mail and mailboxes only.
	mailOnly
	// advisory: encode with ignoreIfUnknown (see there).
	advisory
)

// kind is everything the package knows about one command kind. Adding a
// command is one payload type in commands.go, one handler, and one entry in
// commandKinds.
type kind struct {
	typ        byte // never renumber or reuse; below 0x80
	name       string
	goType     reflect.Type // the payload struct (not a pointer)
	addressing bool
	advisory   bool
	decode     func(payload []byte) (Command, error) // strict JSON into a new *payload
	apply      func(a *applier, cmd Command) (Result, error)
	refused    func(Status) Result // the result kind, carrying a refusal
}

// commandKinds is the table of command kinds, by type byte. It is never
// written after initialisation.
var commandKinds = indexKinds(
	def(0x01, "AddDomain", addressing, Done{}, (*applier).addDomain),
	def(0x02, "DeleteDomain", addressing, Done{}, (*applier).deleteDomain),
	def(0x03, "SetCatchAll", addressing, Done{}, (*applier).setCatchAll),
	def(0x10, "AddAccount", addressing, AccountResult{}, (*applier).addAccount),
	def(0x11, "DeleteAccount", addressing, Done{}, (*applier).deleteAccount),
	def(0x12, "SetPassword", addressing, Done{}, (*applier).setPassword),
	def(0x13, "SetQuota", addressing, Done{}, (*applier).setQuota),
	def(0x14, "SetAccountDisabled", addressing, Done{}, (*applier).setAccountDisabled),
	def(0x15, "SetForwarding", addressing, Done{}, (*applier).setForwarding),
	def(0x20, "SetAlias", addressing, Done{}, (*applier).setAlias),
	def(0x21, "DeleteAlias", addressing, Done{}, (*applier).deleteAlias),
	def(0x77, "GreylistSeen", mailOnly, Done{}, (*applier).greylistSeen), // cmd_greylist.go
	def(0x70, "SetDKIMKeys", mailOnly, Done{}, (*applier).setDKIMKeys),   // cmd_dkim.go; not addressing: keys never change how a recipient resolves
	def(0x71, "TrainSpam", mailOnly, Done{}, (*applier).trainSpam),       // cmd_spam.go; counts only, never how mail resolves
	// cmd_sieve.go. The script kinds are addressing: a script decides where a
	// recipient's mail goes, and delivery reads it after the scoped barrier.
	def(0x72, "PutSieveScript", addressing, Done{}, (*applier).putSieveScript),
	def(0x73, "DeleteSieveScript", addressing, Done{}, (*applier).deleteSieveScript),
	def(0x74, "RenameSieveScript", addressing, Done{}, (*applier).renameSieveScript),
	def(0x75, "SetActiveSieveScript", addressing, Done{}, (*applier).setActiveSieveScript),
	def(0x76, "VacationSent", mailOnly, Done{}, (*applier).vacationSent),
	def(0x30, "CreateMailbox", mailOnly, MailboxResult{}, (*applier).createMailbox),
	def(0x31, "DeleteMailbox", mailOnly, Done{}, (*applier).deleteMailbox),
	def(0x32, "RenameMailbox", mailOnly, MailboxResult{}, (*applier).renameMailbox),
	def(0x33, "SetSubscribed", mailOnly, Done{}, (*applier).setSubscribed),
	def(0x40, "Deliver", mailOnly, DeliverResult{}, (*applier).deliver),
	def(0x41, "Append", mailOnly, AppendResult{}, (*applier).append),
	def(0x42, "Copy", mailOnly, CopyResult{}, (*applier).copy),
	def(0x43, "Move", mailOnly, CopyResult{}, (*applier).move),
	def(0x44, "SetFlags", mailOnly, FlagsResult{}, (*applier).setFlags),
	def(0x45, "Expunge", mailOnly, ExpungeResult{}, (*applier).expunge),
	def(0x46, "ClaimRecent", mailOnly, RecentResult{}, (*applier).claimRecent),
	def(0x50, "PurgeBlobs", mailOnly, PurgeResult{}, (*applier).purgeBlobs),
	def(0x60, "QueueTick", mailOnly, Done{}, (*applier).queueTick),
	def(0x61, "QueueClaim", mailOnly, ClaimResult{}, (*applier).queueClaim),
	def(0x62, "QueueRenew", mailOnly, RenewResult{}, (*applier).queueRenew),
	def(0x63, "QueueReport", mailOnly, ReportResult{}, (*applier).queueReport),
	def(0x64, "QueueAdmin", mailOnly, QueueAdminResult{}, (*applier).queueAdmin),
)

// def builds one table entry. C is the payload type, R the result kind
// (passed as its zero value), apply the handler. Apply sets the applier's
// "now" from the payload's Time before calling it.
func def[C any, PC interface {
	*C
	Command
}, R Result, PR interface {
	*R
	setStatus(Status)
}](typ byte, name string, f kindFlags, _ R, apply func(*applier, PC) (Result, error)) kind {
	t := reflect.TypeFor[C]()
	tf, ok := t.FieldByName("Time")
	if !ok || tf.Type.Kind() != reflect.Int64 {
		panic(fmt.Sprintf("state: command %s has no int64 Time field", t.Name()))
	}
	if f&(addressing|mailOnly) == 0 || f&addressing != 0 && f&mailOnly != 0 {
		panic(fmt.Sprintf("state: command %s must say addressing or mailOnly", t.Name()))
	}
	timeIndex := tf.Index
	return kind{
		typ: typ, name: name, goType: t,
		addressing: f&addressing != 0,
		advisory:   f&advisory != 0,
		decode: func(payload []byte) (Command, error) {
			p := PC(new(C))
			dec := json.NewDecoder(bytes.NewReader(payload))
			dec.DisallowUnknownFields()
			if err := dec.Decode(p); err != nil {
				return nil, err
			}
			if dec.More() {
				return nil, errors.New("trailing data")
			}
			return p, nil
		},
		apply: func(a *applier, cmd Command) (Result, error) {
			p, ok := cmd.(PC)
			if !ok { // a value, not a pointer: tests and direct callers
				v, isValue := cmd.(C)
				if !isValue {
					return nil, fmt.Errorf("%w: %T as %s", ErrUnknownCommand, cmd, name)
				}
				p = &v
			}
			a.now = reflect.ValueOf(p).Elem().FieldByIndex(timeIndex).Int()
			return apply(a, p)
		},
		refused: func(st Status) Result {
			var r R
			PR(&r).setStatus(st)
			return r
		},
	}
}

// kindIndex finds a kind by type byte (Decode) and by payload type (Encode).
type kindIndex struct {
	byType   [0x80]*kind
	byGoType map[reflect.Type]*kind
}

func indexKinds(kinds ...kind) *kindIndex {
	ix := &kindIndex{byGoType: make(map[reflect.Type]*kind, len(kinds))}
	for i := range kinds {
		k := &kinds[i]
		if k.typ >= ignoreIfUnknown || k.typ == 0 {
			panic(fmt.Sprintf("state: command %s has type byte 0x%02x outside 0x01..0x7f", k.name, k.typ))
		}
		if ix.byType[k.typ] != nil || ix.byGoType[k.goType] != nil {
			panic(fmt.Sprintf("state: command %s reuses type byte 0x%02x or its payload type", k.name, k.typ))
		}
		ix.byType[k.typ] = k
		ix.byGoType[k.goType] = k
	}
	return ix
}

// of is the kind of cmd (a payload value or a pointer to one), or nil.
func (ix *kindIndex) of(cmd Command) *kind {
	t := reflect.TypeOf(cmd)
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return ix.byGoType[t]
}

// errSkippable marks the Decode error of an unknown kind that carries
// ignoreIfUnknown; it always comes with ErrUnknownCommand.
var errSkippable = errors.New("marked ignore-if-unknown")

// Encode turns a command into the bytes to propose.
func Encode(cmd Command) ([]byte, error) {
	if cmd == nil || reflect.ValueOf(cmd).Kind() == reflect.Pointer && reflect.ValueOf(cmd).IsNil() {
		return nil, fmt.Errorf("state: encode nil command")
	}
	k := commandKinds.of(cmd)
	if k == nil {
		return nil, fmt.Errorf("%w: %T is not in the table of kinds", ErrUnknownCommand, cmd)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("state: encode %s: %w", k.name, err)
	}
	typ := k.typ
	if k.advisory {
		typ |= ignoreIfUnknown
	}
	out := make([]byte, 0, 1+len(payload))
	out = append(out, typ)
	return append(out, payload...), nil
}

// Decode parses bytes made by Encode into a pointer (*Deliver, …). An
// unknown type byte gives ErrUnknownCommand (and, when the byte carries
// ignoreIfUnknown, an error the applier recognises and skips); a payload
// with unknown fields is an error too.
func Decode(data []byte) (Command, error) {
	_, cmd, err := decode(data)
	return cmd, err
}

func decode(data []byte) (*kind, Command, error) {
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: empty command", ErrUnknownCommand)
	}
	typ := data[0] &^ ignoreIfUnknown
	k := commandKinds.byType[typ]
	if k == nil {
		if data[0]&ignoreIfUnknown != 0 {
			return nil, nil, fmt.Errorf("%w 0x%02x, %w", ErrUnknownCommand, typ, errSkippable)
		}
		return nil, nil, fmt.Errorf("%w 0x%02x", ErrUnknownCommand, typ)
	}
	cmd, err := k.decode(data[1:])
	if err != nil {
		return nil, nil, fmt.Errorf("state: decode command %s (0x%02x): %w", k.name, typ, err)
	}
	return k, cmd, nil
}
