package imap

import (
	"container/list"
	"context"
	"io"
	"sync"

	"github.com/mailcluster/mailcluster/replication/state"
)

// bodyCache keeps recently fetched message bodies in memory, least
// recently used out first. Bodies are content-addressed and never change,
// so an entry can never be stale; a hit saves opening, decompressing and
// verifying the blob again (clients fetch the same message several times:
// headers, then the body, then parts). Safe for concurrent use.
type bodyCache struct {
	limit    int64 // total bytes held at most; 0 disables the cache
	maxEntry int64 // larger bodies are not kept

	mu    sync.Mutex
	size  int64
	order *list.List // of *cacheEntry, front = most recent
	byID  map[state.BlobID]*list.Element
}

type cacheEntry struct {
	id   state.BlobID
	data []byte
}

func newBodyCache(limit int64) *bodyCache {
	return &bodyCache{
		limit:    max(limit, 0),
		maxEntry: min(max(limit/16, 0), 4<<20),
		order:    list.New(),
		byID:     make(map[state.BlobID]*list.Element),
	}
}

func (c *bodyCache) get(id state.BlobID) ([]byte, bool) {
	if c.limit == 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*cacheEntry).data, true
}

func (c *bodyCache) put(id state.BlobID, data []byte) {
	n := int64(len(data))
	if c.limit == 0 || n > c.maxEntry {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; ok {
		return
	}
	c.byID[id] = c.order.PushFront(&cacheEntry{id: id, data: data})
	c.size += n
	for c.size > c.limit {
		last := c.order.Back()
		e := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.byID, e.id)
		c.size -= int64(len(e.data))
	}
}

// cachedBody is a body served from memory.
type cachedBody struct{ data []byte }

func (b cachedBody) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b.data)) {
		return 0, io.EOF
	}
	n := copy(p, b.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b cachedBody) Close() error { return nil }
func (b cachedBody) Size() int64  { return int64(len(b.data)) }

// openBody returns a message body, from the cache when it holds it.
func (s *Server) openBody(ctx context.Context, id state.BlobID) (bodyReader, error) {
	if data, ok := s.bodies.get(id); ok {
		return cachedBody{data}, nil
	}
	b, err := s.cfg.Store.OpenBody(ctx, id)
	if err != nil {
		return nil, err
	}
	if size := b.Size(); size <= s.bodies.maxEntry {
		data := make([]byte, size)
		if _, err := b.ReadAt(data, 0); err == nil || (err == io.EOF && size == 0) {
			_ = b.Close()
			s.bodies.put(id, data)
			return cachedBody{data}, nil
		}
	}
	return b, nil
}
