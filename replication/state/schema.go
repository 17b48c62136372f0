package state

import (
	"encoding/binary"
)

// schemaVersion is stored in the meta bucket; Open refuses any other value.
const schemaVersion uint32 = 1

// Buckets (all top level). Keys that start with an ID use 8-byte big-endian
// IDs so that key order is numeric order and prefix scans select one owner.
// In buckets whose value is {} the key's presence is the data: test it with
// hasKey, never with Get(k) != nil (nil inside the writing transaction).
var (
	bktMeta       = []byte("meta")          // see meta keys below
	bktDomains    = []byte("domains")       // domain → domainRec
	bktAccounts   = []byte("accounts")      // address → accountRec
	bktAccountIDs = []byte("account_ids")   // account ID → address
	bktUsage      = []byte("usage")         // account ID → usageRec
	bktByDomain   = []byte("by_domain")     // domain 0x00 kind 0x00 address → {} (kind 'a' account, 'l' alias)
	bktAliases    = []byte("aliases")       // address → aliasRec
	bktMailboxes  = []byte("mailboxes")     // mailbox ID → mboxRec
	bktMboxNames  = []byte("mailbox_names") // account ID | name → mailbox ID
	bktSubs       = []byte("subscriptions") // account ID | name → {}
	bktMessages   = []byte("messages")      // mailbox ID | UID u32 → msgRec
	bktFlagIndex  = []byte("flag_index")    // mailbox ID | flag byte | UID → {}
	bktBlobs      = []byte("blobs")         // blob ID → blobRec
	bktSummaries  = []byte("summaries")     // blob ID → summary bytes (written once)
	bktBlobZero   = []byte("blob_zero")     // zero-since i64 | blob ID → {} (blobs with no references)
	bktDedup      = []byte("dedup")         // proposal ID → index u64 | result bytes
	bktDedupIndex = []byte("dedup_index")   // index u64 | proposal ID → {}
	bktQueue      = []byte("queue")         // queue ID (index u64 | n u16) → queueRec
	bktQueueDue   = []byte("queue_due")     // next attempt u64 | queue ID → {} (every entry once)

	allBuckets = [][]byte{
		bktMeta, bktDomains, bktAccounts, bktAccountIDs, bktUsage, bktByDomain, bktAliases,
		bktMailboxes, bktMboxNames, bktSubs, bktMessages, bktFlagIndex, bktBlobs,
		bktSummaries, bktBlobZero, bktDedup, bktDedupIndex, bktQueue, bktQueueDue,
	}
)

// Meta keys.
var (
	metaSchema          = []byte("schema")           // u32
	metaApplied         = []byte("applied")          // index u64 | term u64
	metaNextAccount     = []byte("next_account")     // u64, last issued account ID
	metaNextMailbox     = []byte("next_mailbox")     // u64, last issued mailbox ID
	metaLastUIDValidity = []byte("last_uidvalidity") // u32, last issued UIDVALIDITY
	metaQueueNow        = []byte("queue_now")        // i64, the queue clock (QueueTick); absent: 0
	metaQueueTick       = []byte("queue_tick")       // u64, log index of the last QueueTick; absent: 0
)

// IndexedFlag names a flag index kept per mailbox.
type IndexedFlag byte

const (
	IndexUnseen  IndexedFlag = 'u' // messages without \Seen
	IndexDeleted IndexedFlag = 'd' // messages with \Deleted
	IndexFlagged IndexedFlag = 'f' // messages with \Flagged
)

// indexedFlags lists, in key order, the indexes a flag set belongs to.
func indexedFlags(f SystemFlags) (idx [3]IndexedFlag, n int) {
	if f&FlagDeleted != 0 {
		idx[n] = IndexDeleted
		n++
	}
	if f&FlagFlagged != 0 {
		idx[n] = IndexFlagged
		n++
	}
	if f&FlagSeen == 0 {
		idx[n] = IndexUnseen
		n++
	}
	return idx, n
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func msgKey(mailbox uint64, uid uint32) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, mailbox)
	binary.BigEndian.PutUint32(k[8:], uid)
	return k
}

func flagKey(mailbox uint64, f IndexedFlag, uid uint32) []byte {
	k := make([]byte, 13)
	binary.BigEndian.PutUint64(k, mailbox)
	k[8] = byte(f)
	binary.BigEndian.PutUint32(k[9:], uid)
	return k
}

func flagPrefix(mailbox uint64, f IndexedFlag) []byte {
	k := make([]byte, 9)
	binary.BigEndian.PutUint64(k, mailbox)
	k[8] = byte(f)
	return k
}

func nameKey(account uint64, name string) []byte {
	k := make([]byte, 8, 8+len(name))
	binary.BigEndian.PutUint64(k, account)
	return append(k, name...)
}

func byDomainKey(domain string, kind byte, address string) []byte {
	k := make([]byte, 0, len(domain)+len(address)+3)
	k = append(k, domain...)
	k = append(k, 0, kind, 0)
	return append(k, address...)
}

func byDomainPrefix(domain string, kind byte) []byte {
	k := append([]byte(domain), 0)
	if kind != 0 {
		k = append(k, kind, 0)
	}
	return k
}

const (
	kindAccount byte = 'a'
	kindAlias   byte = 'l'
)

func blobZeroKey(since int64, id BlobID) []byte {
	k := make([]byte, 8, 40)
	binary.BigEndian.PutUint64(k, uint64(since))
	return append(k, id[:]...)
}
