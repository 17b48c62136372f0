package state

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Result is the decoded outcome of one applied command. Err returns the
// command's failure as one of this package's sentinels (errors.Is works), or
// nil. Deliver's per-target failures are in its Targets, not in Err.
type Result interface {
	Err() error
	isResult()
}

// Status carries a command's error code; every result embeds it.
type Status struct {
	Code Code `json:"code,omitempty"`
}

func (s Status) Err() error { return s.Code.Err() }

func (Status) isResult()             {}
func (s *Status) setStatus(v Status) { *s = v }

// Done is the result of commands that return nothing but success or failure.
type Done struct {
	Status
}

// AccountResult answers AddAccount.
type AccountResult struct {
	Status
	ID uint64 `json:"id,omitempty"`
}

// MailboxResult answers CreateMailbox and RenameMailbox.
type MailboxResult struct {
	Status
	MailboxID   uint64 `json:"mailbox,omitempty"`
	UIDValidity uint32 `json:"uidvalidity,omitempty"`
}

// TargetResult is the outcome for one DeliverTarget.
type TargetResult struct {
	Status
	MailboxID   uint64 `json:"mailbox,omitempty"`
	UIDValidity uint32 `json:"uidvalidity,omitempty"`
	UID         uint32 `json:"uid,omitempty"`
}

// DeliverResult answers Deliver, one TargetResult per target in order, and
// the IDs of the queue entries made for Remote, in order.
type DeliverResult struct {
	Status
	Targets []TargetResult `json:"targets,omitempty"`
	Queued  []QueueID      `json:"queued,omitempty"`
}

// AppendResult answers Append (APPENDUID).
type AppendResult struct {
	Status
	MailboxID   uint64 `json:"mailbox,omitempty"`
	UIDValidity uint32 `json:"uidvalidity,omitempty"`
	UID         uint32 `json:"uid,omitempty"`
}

// CopyResult answers Copy and Move (COPYUID): the i-th UID of Source went to
// the i-th UID of Dest; both sets are ascending and of equal length.
type CopyResult struct {
	Status
	UIDValidity uint32 `json:"uidvalidity,omitempty"` // of the destination
	Source      UIDSet `json:"src,omitempty"`
	Dest        UIDSet `json:"dst,omitempty"`
}

// FlagGroup is a set of messages that ended up with the same flags.
type FlagGroup struct {
	Flags Flags  `json:"flags,omitzero"`
	UIDs  UIDSet `json:"uids"`
}

// FlagsResult answers SetFlags. Changed lists the messages whose flags
// changed, grouped by their new flags; all of them now have MODSEQ ModSeq.
// Modified lists messages skipped by UnchangedSince. Matched messages whose
// flags already were as asked are in neither list and keep their MODSEQ.
type FlagsResult struct {
	Status
	ModSeq   uint64      `json:"modseq,omitempty"`
	Changed  []FlagGroup `json:"changed,omitempty"`
	Modified UIDSet      `json:"modified,omitempty"`
}

// ExpungeResult answers Expunge: the removed UIDs and the mailbox's new
// HIGHESTMODSEQ (0 if nothing was removed).
type ExpungeResult struct {
	Status
	UIDs   UIDSet `json:"uids,omitempty"`
	ModSeq uint64 `json:"modseq,omitempty"`
}

// RecentResult answers ClaimRecent: UIDs in [Watermark, UIDNext) are recent
// for the claiming session.
type RecentResult struct {
	Status
	Watermark uint32 `json:"watermark,omitempty"`
	UIDNext   uint32 `json:"uidnext,omitempty"`
}

// PurgeResult answers PurgeBlobs with the blobs the state forgot.
type PurgeResult struct {
	Status
	Blobs []BlobID `json:"blobs,omitempty"`
}

// ClaimResult answers QueueClaim: the lease token (the claim's log index)
// and the IDs granted, in the order asked.
type ClaimResult struct {
	Status
	Token   uint64    `json:"token,omitempty"`
	Granted []QueueID `json:"granted,omitempty"`
}

// RenewResult answers QueueRenew: the IDs whose lease the token still holds.
type RenewResult struct {
	Status
	Held []QueueID `json:"held,omitempty"`
}

// OutcomeResult is the fate of one QueueOutcome. Err() is
// ErrStaleLease or ErrNoSuchQueueEntry when it was refused (nothing of it
// written). Targets (the bounce's local copies, in order) and Queued (its
// queue entries) describe a stored Bounce.
type OutcomeResult struct {
	Status
	Targets []TargetResult `json:"targets,omitempty"`
	Queued  []QueueID      `json:"queued,omitempty"`
}

// ReportResult answers QueueReport, one OutcomeResult per outcome in order.
type ReportResult struct {
	Status
	Outcomes []OutcomeResult `json:"outcomes,omitempty"`
}

// QueueAdminResult answers QueueAdmin with the IDs that existed and were
// changed.
type QueueAdminResult struct {
	Status
	Changed []QueueID `json:"changed,omitempty"`
}

// resultKinds is the table of result kinds, by type byte (never renumber
// or reuse). It is never written after initialisation.
var resultKinds = indexResults(
	resultDef[Done](0x01),
	resultDef[AccountResult](0x02),
	resultDef[MailboxResult](0x03),
	resultDef[DeliverResult](0x04),
	resultDef[AppendResult](0x05),
	resultDef[CopyResult](0x06),
	resultDef[FlagsResult](0x07),
	resultDef[ExpungeResult](0x08),
	resultDef[RecentResult](0x09),
	resultDef[PurgeResult](0x0a),
	resultDef[ClaimResult](0x0b),
	resultDef[RenewResult](0x0c),
	resultDef[ReportResult](0x0d),
	resultDef[QueueAdminResult](0x0e),
)

type resultKind struct {
	typ    byte
	goType reflect.Type
	decode func(body []byte) (Result, error)
}

func resultDef[R Result](typ byte) resultKind {
	return resultKind{typ: typ, goType: reflect.TypeFor[R](), decode: decodeAs[R]}
}

type resultIndex struct {
	byType   [256]*resultKind
	byGoType map[reflect.Type]*resultKind
}

func indexResults(kinds ...resultKind) *resultIndex {
	ix := &resultIndex{byGoType: make(map[reflect.Type]*resultKind, len(kinds))}
	for i := range kinds {
		k := &kinds[i]
		if ix.byType[k.typ] != nil || ix.byGoType[k.goType] != nil {
			panic(fmt.Sprintf("state: result %s reuses type byte 0x%02x or its type", k.goType.Name(), k.typ))
		}
		ix.byType[k.typ] = k
		ix.byGoType[k.goType] = k
	}
	return ix
}

// encodeResult is deterministic: fixed field order, no maps.
func encodeResult(r Result) ([]byte, error) {
	k := resultKinds.byGoType[reflect.TypeOf(r)]
	if k == nil {
		return nil, fmt.Errorf("state: encode result %T: not in the table of result kinds", r)
	}
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("state: encode result %T: %w", r, err)
	}
	return append([]byte{k.typ}, payload...), nil
}

// DecodeResult parses the bytes Apply returned for one entry. It returns a
// value type (Done, DeliverResult, …); see ResultAs for a typed shortcut.
func DecodeResult(data []byte) (Result, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("state: empty result")
	}
	k := resultKinds.byType[data[0]]
	if k == nil {
		return nil, fmt.Errorf("state: unknown result type 0x%02x", data[0])
	}
	return k.decode(data[1:])
}

func decodeAs[T Result](body []byte) (Result, error) {
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("state: decode result %T: %w", v, err)
	}
	return v, nil
}

// ResultAs decodes result bytes as T, e.g. ResultAs[DeliverResult](b). It
// does not return the command's own error: check res.Err().
func ResultAs[T Result](data []byte) (T, error) {
	var zero T
	r, err := DecodeResult(data)
	if err != nil {
		return zero, err
	}
	v, ok := r.(T)
	if !ok {
		return zero, fmt.Errorf("state: result is %T, not %T", r, zero)
	}
	return v, nil
}
