package dnsclient

import (
	"errors"
	"sync"
	"time"
)

// Cache bounds: an answer is kept for its smallest TTL, at most maxTTL; a
// "no such record" for negativeTTL; a temporary failure never.
const (
	maxTTL      = time.Hour
	negativeTTL = time.Minute
)

// WithCache returns a resolver that asks the same servers and keeps up to
// entries answers (0: no cache). Every sender of mail asks for the same
// few names again and again (its SPF, DKIM key, DMARC record, reverse
// DNS): a cached answer costs no round trip.
func (r *Resolver) WithCache(entries int) *Resolver {
	c := *r
	c.cache = nil
	if entries > 0 {
		c.cache = &cache{max: entries, entries: make(map[cacheKey]cacheEntry), now: time.Now}
	}
	return &c
}

type cacheKey struct {
	name  string // canonical
	qtype uint16
}

type cacheEntry struct {
	answer  answer
	err     *Error // a not-found answer, or nil
	expires time.Time
}

// cache is a bounded map of answers. When full it drops the expired ones,
// and if that is not enough, everything: simple, and a refill costs one
// query per name.
type cache struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

func (c *cache) get(k cacheKey, name string) (answer, error, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if !ok || !c.now().Before(e.expires) {
		return answer{}, nil, false
	}
	if e.err != nil {
		copied := *e.err
		copied.Name = name
		return answer{}, &copied, true
	}
	return e.answer, nil, true
}

func (c *cache) put(k cacheKey, a answer, err error) {
	var e cacheEntry
	switch {
	case err == nil:
		ttl := maxTTL
		for _, rr := range a.rrs {
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
		if ttl <= 0 {
			return
		}
		e = cacheEntry{answer: a, expires: c.now().Add(ttl)}
	case errors.Is(err, ErrNotFound):
		var de *Error
		if !errors.As(err, &de) || de.cause != nil {
			return
		}
		copied := *de
		e = cacheEntry{err: &copied, expires: c.now().Add(negativeTTL)}
	default:
		return // temporary: ask again next time
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		now := c.now()
		for key, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, key)
			}
		}
		if len(c.entries) >= c.max {
			clear(c.entries)
		}
	}
	c.entries[k] = e
}
