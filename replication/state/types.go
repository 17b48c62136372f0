package state

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// BlobID names a message body: the SHA-256 of its raw bytes (the same value
// as blob.ID; convert with state.BlobID(id)).
type BlobID [32]byte

func (id BlobID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id BlobID) IsZero() bool { return id == BlobID{} }

func (id BlobID) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(id)))
	hex.Encode(out, id[:])
	return out, nil
}

func (id *BlobID) UnmarshalText(b []byte) error {
	if len(b) != hex.EncodedLen(len(id)) {
		return fmt.Errorf("state: blob id %q: want %d hex characters", b, hex.EncodedLen(len(id)))
	}
	_, err := hex.Decode(id[:], b)
	return err
}

// SystemFlags is the bitmask of the IMAP system flags a message can store.
// \Recent is not stored: it comes from ClaimRecent's watermark.
type SystemFlags uint8

const (
	FlagSeen SystemFlags = 1 << iota
	FlagAnswered
	FlagFlagged
	FlagDeleted
	FlagDraft

	allSystemFlags = FlagSeen | FlagAnswered | FlagFlagged | FlagDeleted | FlagDraft
)

// systemFlagNames is in bit order; it is never written.
var systemFlagNames = [...]struct {
	flag SystemFlags
	name string
}{
	{FlagSeen, `\Seen`},
	{FlagAnswered, `\Answered`},
	{FlagFlagged, `\Flagged`},
	{FlagDeleted, `\Deleted`},
	{FlagDraft, `\Draft`},
}

// Flags is a message's flag set: system flags as bits plus keywords.
// Keywords compare case-insensitively and are stored as first given.
type Flags struct {
	System   SystemFlags `json:"s,omitempty"`
	Keywords []string    `json:"k,omitempty"`
}

// ParseFlags turns IMAP flag names into Flags. `\Recent` is dropped (it is
// not a stored flag); unknown backslash names are kept as keywords.
func ParseFlags(names []string) Flags {
	var f Flags
	for _, n := range names {
		f = f.with(n)
	}
	return f
}

func (f Flags) with(name string) Flags {
	if name == "" || strings.EqualFold(name, `\Recent`) {
		return f
	}
	for _, s := range systemFlagNames {
		if strings.EqualFold(name, s.name) {
			f.System |= s.flag
			return f
		}
	}
	if !f.HasKeyword(name) {
		f.Keywords = append(f.Keywords, name)
	}
	return f
}

// Strings returns the IMAP names: system flags first, then keywords.
func (f Flags) Strings() []string {
	out := make([]string, 0, 5+len(f.Keywords))
	for _, s := range systemFlagNames {
		if f.System&s.flag != 0 {
			out = append(out, s.name)
		}
	}
	return append(out, f.Keywords...)
}

// HasKeyword reports whether kw is set, ignoring case.
func (f Flags) HasKeyword(kw string) bool {
	for _, k := range f.Keywords {
		if strings.EqualFold(k, kw) {
			return true
		}
	}
	return false
}

// Equal reports whether f and g hold the same flags (keyword order and case
// do not matter).
func (f Flags) Equal(g Flags) bool {
	if f.System != g.System || len(f.Keywords) != len(g.Keywords) {
		return false
	}
	for _, k := range f.Keywords {
		if !g.HasKeyword(k) {
			return false
		}
	}
	return true
}

// normalize maps system flag names given as keywords to bits, drops empty,
// \Recent and duplicate keywords and unknown system bits.
func (f Flags) normalize() Flags {
	out := Flags{System: f.System & allSystemFlags}
	for _, k := range f.Keywords {
		out = out.with(k)
	}
	return out
}

// canonical is a map key for grouping equal flag sets.
func (f Flags) canonical() string {
	ks := make([]string, len(f.Keywords))
	for i, k := range f.Keywords {
		ks[i] = strings.ToLower(k)
	}
	slices.Sort(ks)
	return strconv.Itoa(int(f.System)) + " " + strings.Join(ks, " ")
}

// FlagOp says how SetFlags combines the given flags with a message's flags.
type FlagOp uint8

const (
	FlagsAdd FlagOp = iota + 1
	FlagsRemove
	FlagsReplace
)

func (op FlagOp) apply(old, f Flags) Flags {
	switch op {
	case FlagsAdd:
		out := Flags{System: old.System | f.System, Keywords: slices.Clone(old.Keywords)}
		for _, k := range f.Keywords {
			out = out.with(k)
		}
		return out
	case FlagsRemove:
		out := Flags{System: old.System &^ f.System}
		for _, k := range old.Keywords {
			if !f.HasKeyword(k) {
				out.Keywords = append(out.Keywords, k)
			}
		}
		return out
	default:
		return f
	}
}

// SpecialUse is a mailbox's RFC 6154 attribute, or "" for none.
type SpecialUse string

const (
	UseNone    SpecialUse = ""
	UseAll     SpecialUse = `\All`
	UseArchive SpecialUse = `\Archive`
	UseDrafts  SpecialUse = `\Drafts`
	UseFlagged SpecialUse = `\Flagged`
	UseJunk    SpecialUse = `\Junk`
	UseSent    SpecialUse = `\Sent`
	UseTrash   SpecialUse = `\Trash`
)

// specialUses maps the stored byte (the index) to the attribute. Never reorder.
var specialUses = [...]SpecialUse{UseNone, UseAll, UseArchive, UseDrafts, UseFlagged, UseJunk, UseSent, UseTrash}

func (u SpecialUse) code() (uint8, bool) {
	for i, s := range specialUses {
		if strings.EqualFold(string(s), string(u)) {
			return uint8(i), true
		}
	}
	return 0, false
}

func specialUseOf(code uint8) SpecialUse {
	if int(code) < len(specialUses) {
		return specialUses[code]
	}
	return UseNone
}

// UIDRange is an inclusive range of UIDs.
type UIDRange struct{ Start, Stop uint32 }

// UIDSet is a set of UIDs as ranges. Commands accept any ranges (Apply sorts
// and merges them); results always hold sorted, merged ranges. Its JSON and
// text form is IMAP's: "1:5,7,9:12". Use Stop = 4294967295 for "to the end".
type UIDSet []UIDRange

// UIDSetOf builds a set from UIDs in any order.
func UIDSetOf(uids ...uint32) UIDSet {
	var s UIDSet
	for _, u := range uids {
		s = append(s, UIDRange{u, u})
	}
	return s.normalize()
}

// add appends uid, which must be above every UID already in s.
func (s *UIDSet) add(uid uint32) {
	if n := len(*s); n > 0 && (*s)[n-1].Stop+1 == uid {
		(*s)[n-1].Stop = uid
		return
	}
	*s = append(*s, UIDRange{uid, uid})
}

// normalize returns s sorted and merged, without UID 0.
func (s UIDSet) normalize() UIDSet {
	out := make(UIDSet, 0, len(s))
	for _, r := range s {
		if r.Start > r.Stop {
			r.Start, r.Stop = r.Stop, r.Start
		}
		if r.Start == 0 {
			r.Start = 1
		}
		if r.Stop == 0 {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b UIDRange) int {
		if a.Start != b.Start {
			if a.Start < b.Start {
				return -1
			}
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && uint64(merged[n-1].Stop)+1 >= uint64(r.Start) {
			merged[n-1].Stop = max(merged[n-1].Stop, r.Stop)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// Contains reports whether uid is in s.
func (s UIDSet) Contains(uid uint32) bool {
	for _, r := range s {
		lo, hi := min(r.Start, r.Stop), max(r.Start, r.Stop)
		if uid >= lo && uid <= hi {
			return true
		}
	}
	return false
}

// Len counts the UIDs in a normalized set.
func (s UIDSet) Len() int {
	n := 0
	for _, r := range s {
		n += int(r.Stop-r.Start) + 1
	}
	return n
}

// UIDs lists the UIDs of a normalized set in order. Do not call it on an
// open-ended set.
func (s UIDSet) UIDs() []uint32 {
	out := make([]uint32, 0, s.Len())
	for _, r := range s {
		for u := uint64(r.Start); u <= uint64(r.Stop); u++ {
			out = append(out, uint32(u))
		}
	}
	return out
}

func (s UIDSet) String() string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(r.Start), 10))
		if r.Stop != r.Start {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(r.Stop), 10))
		}
	}
	return b.String()
}

// ParseUIDSet parses the form String produces ("*" is not accepted).
func ParseUIDSet(text string) (UIDSet, error) {
	if text == "" {
		return nil, nil
	}
	var s UIDSet
	for part := range strings.SplitSeq(text, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("state: uid set %q: %w", text, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 32); err != nil {
				return nil, fmt.Errorf("state: uid set %q: %w", text, err)
			}
		}
		s = append(s, UIDRange{uint32(a), uint32(b)})
	}
	return s, nil
}

func (s UIDSet) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *UIDSet) UnmarshalText(b []byte) error {
	v, err := ParseUIDSet(string(b))
	*s = v
	return err
}
