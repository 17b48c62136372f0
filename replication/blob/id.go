package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// ID names a blob: the SHA-256 of its raw (uncompressed) bytes.
type ID [32]byte

// Sum returns the ID of raw bytes held in memory.
func Sum(raw []byte) ID { return ID(sha256.Sum256(raw)) }

// String is the lower-case hex form used in file names and logs.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero value (never a real blob's ID in practice).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the 64-character hex form produced by String.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("blob: parse id %q: want %d hex characters", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("blob: parse id %q: %w", s, err)
	}
	return id, nil
}
