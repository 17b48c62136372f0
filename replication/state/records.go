package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Stored records. Hot records (messages, mailboxes, blobs, usage) use a
// compact binary layout that starts with a version byte; cold records
// (domains, accounts, aliases) are JSON after a version byte, which keeps
// them easy to extend.

const recordV1 byte = 1

var errCorrupt = errors.New("state: corrupt record")

// msgRec is one message in a mailbox. Layout (v1):
//
//	0 version | 1 uid u32 | 5 modseq u64 | 13 flags u8 | 14 blob [32] |
//	46 size u64 | 54 date unix-nanos i64 | 62 zone offset seconds i32 |
//	66 keyword count uvarint, then per keyword uvarint length + bytes
type msgRec struct {
	uid    uint32
	modseq uint64
	flags  Flags
	blob   BlobID
	size   uint64
	date   int64
	zone   int32
}

const msgFixedLen = 66

func (m *msgRec) encode() []byte {
	n := msgFixedLen + 1
	for _, k := range m.flags.Keywords {
		n += binary.MaxVarintLen32 + len(k)
	}
	b := make([]byte, msgFixedLen, n)
	b[0] = recordV1
	binary.BigEndian.PutUint32(b[1:], m.uid)
	binary.BigEndian.PutUint64(b[5:], m.modseq)
	b[13] = byte(m.flags.System)
	copy(b[14:46], m.blob[:])
	binary.BigEndian.PutUint64(b[46:], m.size)
	binary.BigEndian.PutUint64(b[54:], uint64(m.date))
	binary.BigEndian.PutUint32(b[62:], uint32(m.zone))
	b = binary.AppendUvarint(b, uint64(len(m.flags.Keywords)))
	for _, k := range m.flags.Keywords {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

func decodeMsg(b []byte) (msgRec, error) {
	var m msgRec
	if len(b) < msgFixedLen || b[0] != recordV1 {
		return m, errCorrupt
	}
	m.uid = binary.BigEndian.Uint32(b[1:])
	m.modseq = binary.BigEndian.Uint64(b[5:])
	copy(m.blob[:], b[14:46])
	m.size = binary.BigEndian.Uint64(b[46:])
	m.date = int64(binary.BigEndian.Uint64(b[54:]))
	m.zone = int32(binary.BigEndian.Uint32(b[62:]))
	var err error
	m.flags, err = decodeMsgFlags(b)
	return m, err
}

// decodeMsgFlags reads only the flags: the FETCH FLAGS path.
func decodeMsgFlags(b []byte) (Flags, error) {
	if len(b) < msgFixedLen || b[0] != recordV1 {
		return Flags{}, errCorrupt
	}
	f := Flags{System: SystemFlags(b[13])}
	rest := b[msgFixedLen:]
	count, n := binary.Uvarint(rest)
	if n <= 0 || count > uint64(len(rest)) {
		return f, errCorrupt
	}
	rest = rest[n:]
	if count > 0 {
		f.Keywords = make([]string, 0, count)
	}
	for range count {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return f, errCorrupt
		}
		f.Keywords = append(f.Keywords, string(rest[n:n+int(l)]))
		rest = rest[n+int(l):]
	}
	return f, nil
}

func msgModSeq(b []byte) uint64 { return binary.BigEndian.Uint64(b[5:]) }

func (m *msgRec) internalDate() time.Time {
	return time.Unix(0, m.date).In(time.FixedZone("", int(m.zone)))
}

// mboxRec is a mailbox with its counters. Layout (v1), then the name:
//
//	0 version | 1 id u64 | 9 account u64 | 17 uidvalidity u32 | 21 uidnext u32 |
//	25 highestmodseq u64 | 33 recent u32 | 37 special use u8 | 38 messages u32 |
//	42 unseen u32 | 46 deleted u32 | 50 size u64 | 58 created i64 | 66 name
type mboxRec struct {
	id            uint64
	account       uint64
	uidValidity   uint32
	uidNext       uint32
	highestModSeq uint64
	recent        uint32
	specialUse    uint8
	messages      uint32
	unseen        uint32
	deleted       uint32
	size          uint64
	created       int64
	name          string
}

const mboxFixedLen = 66

func (m *mboxRec) encode() []byte {
	b := make([]byte, mboxFixedLen, mboxFixedLen+len(m.name))
	b[0] = recordV1
	binary.BigEndian.PutUint64(b[1:], m.id)
	binary.BigEndian.PutUint64(b[9:], m.account)
	binary.BigEndian.PutUint32(b[17:], m.uidValidity)
	binary.BigEndian.PutUint32(b[21:], m.uidNext)
	binary.BigEndian.PutUint64(b[25:], m.highestModSeq)
	binary.BigEndian.PutUint32(b[33:], m.recent)
	b[37] = m.specialUse
	binary.BigEndian.PutUint32(b[38:], m.messages)
	binary.BigEndian.PutUint32(b[42:], m.unseen)
	binary.BigEndian.PutUint32(b[46:], m.deleted)
	binary.BigEndian.PutUint64(b[50:], m.size)
	binary.BigEndian.PutUint64(b[58:], uint64(m.created))
	return append(b, m.name...)
}

func decodeMbox(b []byte) (mboxRec, error) {
	if len(b) < mboxFixedLen || b[0] != recordV1 {
		return mboxRec{}, errCorrupt
	}
	return mboxRec{
		id:            binary.BigEndian.Uint64(b[1:]),
		account:       binary.BigEndian.Uint64(b[9:]),
		uidValidity:   binary.BigEndian.Uint32(b[17:]),
		uidNext:       binary.BigEndian.Uint32(b[21:]),
		highestModSeq: binary.BigEndian.Uint64(b[25:]),
		recent:        binary.BigEndian.Uint32(b[33:]),
		specialUse:    b[37],
		messages:      binary.BigEndian.Uint32(b[38:]),
		unseen:        binary.BigEndian.Uint32(b[42:]),
		deleted:       binary.BigEndian.Uint32(b[46:]),
		size:          binary.BigEndian.Uint64(b[50:]),
		created:       int64(binary.BigEndian.Uint64(b[58:])),
		name:          string(b[mboxFixedLen:]),
	}, nil
}

// blobRec counts references to a blob. The summary lives in its own bucket,
// written once, so reference changes rewrite only these 25 bytes:
//
//	0 version | 1 refs u64 | 9 size u64 | 17 zero-since unix-nanos i64
type blobRec struct {
	refs      uint64
	size      uint64
	zeroSince int64
}

const blobRecLen = 25

func (r *blobRec) encode() []byte {
	b := make([]byte, blobRecLen)
	b[0] = recordV1
	binary.BigEndian.PutUint64(b[1:], r.refs)
	binary.BigEndian.PutUint64(b[9:], r.size)
	binary.BigEndian.PutUint64(b[17:], uint64(r.zeroSince))
	return b
}

func decodeBlob(b []byte) (blobRec, error) {
	if len(b) != blobRecLen || b[0] != recordV1 {
		return blobRec{}, errCorrupt
	}
	return blobRec{
		refs:      binary.BigEndian.Uint64(b[1:]),
		size:      binary.BigEndian.Uint64(b[9:]),
		zeroSince: int64(binary.BigEndian.Uint64(b[17:])),
	}, nil
}

// usageRec is an account's usage: 0 version | 1 bytes u64 | 9 messages u64.
type usageRec struct {
	bytes    uint64
	messages uint64
}

func (u *usageRec) encode() []byte {
	b := make([]byte, 17)
	b[0] = recordV1
	binary.BigEndian.PutUint64(b[1:], u.bytes)
	binary.BigEndian.PutUint64(b[9:], u.messages)
	return b
}

func decodeUsage(b []byte) (usageRec, error) {
	if len(b) != 17 || b[0] != recordV1 {
		return usageRec{}, errCorrupt
	}
	return usageRec{bytes: binary.BigEndian.Uint64(b[1:]), messages: binary.BigEndian.Uint64(b[9:])}, nil
}

// Cold records.

type domainRec struct {
	Created  int64  `json:"created"`
	CatchAll string `json:"catch_all,omitempty"`
}

type accountRec struct {
	ID            uint64   `json:"id"`
	Address       string   `json:"address"`
	PasswordHash  string   `json:"password_hash"`
	QuotaBytes    int64    `json:"quota_bytes,omitempty"`
	QuotaMessages int64    `json:"quota_messages,omitempty"`
	Disabled      bool     `json:"disabled,omitempty"`
	Forward       []string `json:"forward,omitempty"`
	KeepLocal     bool     `json:"keep_local,omitempty"`
	Created       int64    `json:"created"`
}

type aliasRec struct {
	Targets []string `json:"targets"`
	Created int64    `json:"created"`
}

func encodeJSONRecord(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{recordV1}, b...), nil
}

func decodeJSONRecord(b []byte, v any) error {
	if len(b) < 1 || b[0] != recordV1 {
		return errCorrupt
	}
	if err := json.Unmarshal(b[1:], v); err != nil {
		return fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return nil
}
