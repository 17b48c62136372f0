package state

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The spam classifier's counts (package spam scores with them). They live
// here so every node gives the same verdict: one TrainSpam entry per
// training event adds a message's tokens to its account's counts and to
// the cluster-wide ones (account ID 0, the sum over every account; real
// account IDs start at 1).
//
// The buckets are made by the first TrainSpam (files made before they
// existed have none: reads treat a missing bucket as "nothing trained").
// Snapshots carry them like every other bucket (the whole bbolt file).
var (
	// bktSpamTotals: account ID u64 (0: cluster-wide) → spam uvarint | ham
	// uvarint, the messages trained.
	bktSpamTotals = []byte("spam_totals")
	// bktSpamTokens: account ID u64 | token hash u64 → spam uvarint | ham
	// uvarint, the trained messages that held the token. A token whose
	// counts both reach 0 is deleted.
	bktSpamTokens = []byte("spam_tokens")
	// bktSpamTrained: account ID u64 | blob ID → 's' or 'h', how a body
	// was last trained for the account (TrainSpam with a Blob).
	bktSpamTrained = []byte("spam_trained")
)

// MaxSpamTokens bounds the tokens of one TrainSpam (the tokenizer gives at
// most 1000): it bounds one entry's work in Apply and its log size.
const MaxSpamTokens = 4096

// SpamTokenHashes are token hashes; they encode as base64 of 8 bytes each,
// big-endian (about 11 bytes a token in the log instead of about 20 as
// JSON numbers).
type SpamTokenHashes []uint64

// MarshalJSON is the packed form.
func (h SpamTokenHashes) MarshalJSON() ([]byte, error) {
	b := make([]byte, 8*len(h))
	for i, v := range h {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	return json.Marshal(b)
}

// UnmarshalJSON reads the packed form. It does not limit the count: a
// decode error stops every node, so too many tokens are Apply's refusal.
func (h *SpamTokenHashes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b)%8 != 0 {
		return fmt.Errorf("state: spam tokens of %d bytes", len(b))
	}
	out := make(SpamTokenHashes, len(b)/8)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	*h = out
	return nil
}

// TrainSpam teaches the classifier one message of Account: Spam true for
// spam, false for ham (good mail). Tokens are the message's distinct token
// hashes in ascending order (spam.Tokens), at most MaxSpamTokens;
// anything else is refused with ErrInvalidArgument. Apply adds 1 to the
// account's and the cluster-wide message count of the class, and to each
// token's count of that class, in both.
//
// Blob, when set, names the body the tokens came from, and makes training
// follow the user's last word about it: a body already trained in the
// same class for the account changes nothing (moving a message in and out
// of Junk and back, or copying it twice, counts once); a body trained in
// the other class is first untrained from it (its message count and the
// same tokens' counts of the other class go down by 1, never below 0). So
// a message moved into Junk by mistake and out again ends as one ham
// training, not one of each.
//
// Refusals: ErrNoSuchAccount, ErrInvalidArgument. Result: Done.
type TrainSpam struct {
	command
	Time    int64           `json:"t"`
	Account string          `json:"account"`
	Blob    BlobID          `json:"blob,omitzero"`
	Spam    bool            `json:"spam,omitempty"`
	Tokens  SpamTokenHashes `json:"tokens"`
}

const (
	spamClass byte = 's'
	hamClass  byte = 'h'
)

func (a *applier) trainSpam(c *TrainSpam) (Result, error) {
	rec, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	if len(c.Tokens) > MaxSpamTokens {
		return nil, ErrInvalidArgument
	}
	for i := 1; i < len(c.Tokens); i++ {
		if c.Tokens[i] <= c.Tokens[i-1] {
			return nil, ErrInvalidArgument // not sorted, or a duplicate
		}
	}
	class, other := hamClass, spamClass
	if c.Spam {
		class, other = spamClass, hamClass
	}
	untrain := false
	var trainedKey []byte
	if !c.Blob.IsZero() {
		trainedKey = spamTrainedKey(rec.ID, c.Blob)
		if b := a.tx.Bucket(bktSpamTrained); b != nil {
			switch v := b.Get(trainedKey); {
			case len(v) == 1 && v[0] == class:
				return Done{}, nil
			case len(v) == 1 && v[0] == other:
				untrain = true
			case v != nil:
				return nil, fmt.Errorf("%w: spam_trained value %x", errCorrupt, v)
			}
		}
	}
	totals, err := a.tx.CreateBucketIfNotExists(bktSpamTotals)
	if err != nil {
		return nil, err
	}
	tokens, err := a.tx.CreateBucketIfNotExists(bktSpamTokens)
	if err != nil {
		return nil, err
	}
	// change is the delta of one class's count: +1 for the trained class,
	// −1 (floored at 0) for the untrained one.
	change := func(v []byte) ([]byte, error) {
		s, h, err := decodeSpamCounts(v)
		if err != nil {
			return nil, err
		}
		if c.Spam {
			s++
			if untrain && h > 0 {
				h--
			}
		} else {
			h++
			if untrain && s > 0 {
				s--
			}
		}
		if s == 0 && h == 0 { // unreachable while every token gains 1; kept tidy
			return nil, nil
		}
		return encodeSpamCounts(s, h), nil
	}
	for _, id := range []uint64{rec.ID, 0} {
		v, err := change(totals.Get(u64(id)))
		if err != nil {
			return nil, err
		}
		if err := totals.Put(u64(id), v); err != nil {
			return nil, err
		}
		key := make([]byte, 16)
		binary.BigEndian.PutUint64(key, id)
		for _, h := range c.Tokens {
			binary.BigEndian.PutUint64(key[8:], h)
			v, err := change(tokens.Get(key))
			if err != nil {
				return nil, err
			}
			if v == nil {
				err = tokens.Delete(key)
			} else {
				err = tokens.Put(bytes.Clone(key), v)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if trainedKey != nil {
		b, err := a.tx.CreateBucketIfNotExists(bktSpamTrained)
		if err != nil {
			return nil, err
		}
		if err := b.Put(trainedKey, []byte{class}); err != nil {
			return nil, err
		}
	}
	return Done{}, nil
}

// deleteSpamCounts forgets a deleted account's counts and trained bodies.
// The cluster-wide counts keep what it taught: they are sums without
// names, and taking them back exactly would need every trained message's
// tokens.
func (a *applier) deleteSpamCounts(account uint64) error {
	for _, name := range [][]byte{bktSpamTokens, bktSpamTrained} {
		b := a.tx.Bucket(name)
		if b == nil {
			continue
		}
		keys, _ := keysWithPrefix(b, u64(account))
		if err := deleteKeys(b, keys); err != nil {
			return err
		}
	}
	if b := a.tx.Bucket(bktSpamTotals); b != nil {
		return b.Delete(u64(account))
	}
	return nil
}

func spamTrainedKey(account uint64, blob BlobID) []byte {
	k := make([]byte, 8, 8+len(blob))
	binary.BigEndian.PutUint64(k, account)
	return append(k, blob[:]...)
}

func encodeSpamCounts(spam, ham uint64) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, spam)
	return binary.AppendUvarint(b, ham)
}

// decodeSpamCounts reads a counts value; nil is (0, 0).
func decodeSpamCounts(v []byte) (spam, ham uint64, err error) {
	if v == nil {
		return 0, 0, nil
	}
	spam, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: spam counts %x", errCorrupt, v)
	}
	ham, m := binary.Uvarint(v[n:])
	if m <= 0 || n+m != len(v) {
		return 0, 0, fmt.Errorf("%w: spam counts %x", errCorrupt, v)
	}
	return spam, ham, nil
}

// SpamCount is how many trained spam and ham messages held a token (or,
// from SpamTotals, were trained).
type SpamCount struct {
	Spam, Ham uint64
}

// spamAccountID is the key of account's counts: 0 for "" (cluster-wide);
// ok is false for an address with no account.
func (t *Tx) spamAccountID(account string) (id uint64, ok bool, err error) {
	if account == "" {
		return 0, true, nil
	}
	addr, err := NormalizeAddress(account)
	if err != nil {
		return 0, false, nil
	}
	rec, err := getAccount(t.bucket(bktAccounts), addr)
	if errors.Is(err, ErrNoSuchAccount) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return rec.ID, true, nil
}

// SpamTotals is how many spam and ham messages were trained for account
// ("" : cluster-wide). An unknown account has none.
func (t *Tx) SpamTotals(account string) (SpamCount, error) {
	id, ok, err := t.spamAccountID(account)
	if err != nil || !ok {
		return SpamCount{}, err
	}
	b := t.bucket(bktSpamTotals)
	if b == nil {
		return SpamCount{}, nil
	}
	s, h, err := decodeSpamCounts(b.Get(u64(id)))
	return SpamCount{s, h}, err
}

// SpamTokens returns the counts of account's ("": cluster-wide) tokens, in
// the order of hashes (zero for one never trained). Sorted hashes read
// fastest.
func (t *Tx) SpamTokens(account string, hashes []uint64) ([]SpamCount, error) {
	out := make([]SpamCount, len(hashes))
	id, ok, err := t.spamAccountID(account)
	if err != nil || !ok {
		return out, err
	}
	b := t.bucket(bktSpamTokens)
	if b == nil {
		return out, nil
	}
	key := make([]byte, 16)
	binary.BigEndian.PutUint64(key, id)
	for i, h := range hashes {
		binary.BigEndian.PutUint64(key[8:], h)
		s, hm, err := decodeSpamCounts(b.Get(key))
		if err != nil {
			return nil, err
		}
		out[i] = SpamCount{s, hm}
	}
	return out, nil
}

// SpamTrained says how a body was last trained for account: trained is
// false if never (through TrainSpam with its Blob).
func (t *Tx) SpamTrained(account string, blob BlobID) (trained, spam bool, err error) {
	id, ok, err := t.spamAccountID(account)
	if err != nil || !ok || account == "" {
		return false, false, err
	}
	b := t.bucket(bktSpamTrained)
	if b == nil {
		return false, false, nil
	}
	v := b.Get(spamTrainedKey(id, blob))
	if v == nil {
		return false, false, nil
	}
	return true, len(v) == 1 && v[0] == spamClass, nil
}
