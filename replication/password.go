package replication

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// argon2id parameters: OWASP's minimum recommendation (19 MiB, 2 passes).
// A login costs a few tens of milliseconds of one core; the auth cache
// below keeps clients that reconnect often from paying it every time.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// MinPasswordLen is the shortest password accepted for new accounts.
const MinPasswordLen = 8

// HashPassword returns an argon2id hash in the PHC string format
// ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
func HashPassword(password string) (string, error) {
	if len(password) < MinPasswordLen {
		return "", fmt.Errorf("%w: password must be at least %d characters", ErrInvalidArgument, MinPasswordLen)
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("unrecognised password hash")

// verifyPassword checks password against a PHC argon2id string, honouring
// the parameters stored in it (so they can be raised later).
func verifyPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var mem, passes uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &passes, &threads); err != nil || mem == 0 || passes == 0 || threads == 0 {
		return false, errBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(password), salt, passes, mem, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// authCache remembers recent successful logins as (stored hash, SHA-256 of
// the password) so a client reconnecting every minute does not cost an
// argon2 computation each time. An entry is only valid for the exact stored
// hash it was made with: a password change invalidates it at once.
type authCache struct {
	mu      sync.Mutex
	entries map[string]authEntry // account -> entry
	ttl     time.Duration
	max     int
}

type authEntry struct {
	hash    string
	digest  [32]byte
	expires time.Time
}

func newAuthCache(ttl time.Duration, max int) *authCache {
	return &authCache{entries: make(map[string]authEntry), ttl: ttl, max: max}
}

func (c *authCache) ok(account, storedHash, password string) bool {
	d := sha256.Sum256([]byte(password))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.entries[account]
	if !found || e.hash != storedHash || time.Now().After(e.expires) {
		return false
	}
	return subtle.ConstantTimeCompare(e.digest[:], d[:]) == 1
}

func (c *authCache) remember(account, storedHash, password string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		now := time.Now()
		for k, e := range c.entries {
			if now.After(e.expires) || len(c.entries) >= c.max {
				delete(c.entries, k)
			}
		}
	}
	c.entries[account] = authEntry{hash: storedHash, digest: sha256.Sum256([]byte(password)), expires: time.Now().Add(c.ttl)}
}
