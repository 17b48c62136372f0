package blob

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// committer is the group commit: Puts that have renamed their file into
// place join the open batch and wait; one goroutine flushes a whole batch
// with one syncfs (or one fsync per distinct directory) and wakes everyone in
// it. A batch is taken only after each member joined, and members join only
// after their rename, so a flush always covers the renames of its batch.
// While one flush runs the next batch fills up, which is what amortises the
// cost under load without adding latency when idle.
type committer struct {
	s *Store

	mu     sync.Mutex
	cur    *commitBatch
	closed bool

	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	commits atomic.Int64
	flushNs atomic.Int64 // total time spent flushing
}

type commitBatch struct {
	n    int
	dirs map[string]struct{} // directories to fsync in SyncPerFile mode
	done chan struct{}
	err  error
}

func newBatch() *commitBatch {
	return &commitBatch{dirs: make(map[string]struct{}), done: make(chan struct{})}
}

func newCommitter(s *Store) *committer {
	c := &committer{
		s:       s,
		cur:     newBatch(),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go c.loop()
	return c
}

// join adds a waiter to the open batch (noting dir, whose entries changed)
// and wakes the committer. The batch is flushed after this call, so it
// covers everything the caller did before.
func (c *committer) join(dir string) (*commitBatch, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	b := c.cur
	b.n++
	b.dirs[dir] = struct{}{}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return b, nil
}

// wait returns when the batch is durable (or failed to become so). A
// cancelled ctx stops the waiting, not the flush.
func (b *commitBatch) wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *committer) loop() {
	defer close(c.stopped)
	for {
		stopping := false
		select {
		case <-c.wake:
		case <-c.stop:
			stopping = true
		}
		c.mu.Lock()
		b := c.cur
		c.cur = newBatch()
		c.closed = stopping
		c.mu.Unlock()
		if b.n > 0 {
			start := time.Now()
			b.err = c.flush(b)
			c.flushNs.Add(int64(time.Since(start)))
			c.commits.Add(1)
			close(b.done)
		}
		if stopping {
			return
		}
	}
}

func (c *committer) flush(b *commitBatch) error {
	s := c.s
	if s.beforeFlush != nil {
		s.beforeFlush(b.n)
	}
	if s.opts.Sync == SyncFilesystem {
		s.syncCalls.Add(1)
		if err := syncFilesystem(s.root); err != nil {
			s.log.Error("blob: syncfs failed", "err", err)
			return fmt.Errorf("syncfs: %w", err)
		}
		return nil
	}
	// Per-directory fsyncs are independent; run a few at once so a batch of
	// Puts spread over many shard directories does not serialise on them.
	const workers = 8
	dirs := make(chan string)
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < min(workers, len(b.dirs)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range dirs {
				if err := s.fsyncPath(d); err != nil && !os.IsNotExist(err) {
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("fsync %s: %w", d, err)
					}
					errMu.Unlock()
				}
			}
		}()
	}
	for d := range b.dirs {
		dirs <- d
	}
	close(dirs)
	wg.Wait()
	if firstErr != nil {
		s.log.Error("blob: directory fsync failed", "err", firstErr)
	}
	return firstErr
}

func (c *committer) close() {
	close(c.stop)
	<-c.stopped
}
