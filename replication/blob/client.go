package blob

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Client pushes blobs to and fetches blobs from peers' Servers, reading and
// writing the local Store. It keeps a small pool of idle connections per
// peer and is safe for concurrent use; each request uses its own connection.
type Client struct {
	store *Store
	link  Link

	// StallTimeout fails a request that makes no progress for this long,
	// whatever its ctx says.
	StallTimeout time.Duration
	// MaxIdlePerPeer bounds pooled idle connections per address.
	MaxIdlePerPeer int
	// MaxIdleTime drops a pooled connection unused for this long (keep it
	// below the server's IdleTimeout).
	MaxIdleTime time.Duration

	mu     sync.Mutex
	idle   map[string][]*clientConn
	closed bool
}

// NewClient returns a client that copies blobs between store and the peers
// reachable over link. (The store is needed: Push reads the local copy and
// Fetch writes into it.)
func NewClient(store *Store, link Link) *Client {
	return &Client{
		store:          store,
		link:           link,
		StallTimeout:   30 * time.Second,
		MaxIdlePerPeer: 64,
		MaxIdleTime:    45 * time.Second,
		idle:           make(map[string][]*clientConn),
	}
}

type clientConn struct {
	addr     string
	conn     *timedConn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
}

// Close closes the pooled connections; later requests fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for addr, conns := range c.idle {
		for _, cc := range conns {
			_ = cc.conn.Close()
		}
		delete(c.idle, addr)
	}
	return nil
}

func (c *Client) get(ctx context.Context, addr string) (*clientConn, bool, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, ErrClosed
	}
	for conns := c.idle[addr]; len(conns) > 0; conns = c.idle[addr] {
		cc := conns[len(conns)-1]
		c.idle[addr] = conns[:len(conns)-1]
		if time.Since(cc.lastUsed) < c.MaxIdleTime {
			c.mu.Unlock()
			return cc, true, nil
		}
		_ = cc.conn.Close()
	}
	c.mu.Unlock()

	raw, err := c.link.Dial(ctx, addr)
	if err != nil {
		return nil, false, fmt.Errorf("blob: dial %s: %w", addr, err)
	}
	tc := &timedConn{Conn: raw}
	cc := &clientConn{
		addr: addr,
		conn: tc,
		br:   bufio.NewReaderSize(tc, copyBufferSize),
		bw:   bufio.NewWriterSize(tc, copyBufferSize),
	}
	// Sent together with the first request.
	_, _ = cc.bw.Write(preamble[:])
	return cc, false, nil
}

func (c *Client) release(cc *clientConn) {
	cc.lastUsed = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[cc.addr]) >= c.MaxIdlePerPeer {
		_ = cc.conn.Close()
		return
	}
	c.idle[cc.addr] = append(c.idle[cc.addr], cc)
}

// keepConnError marks a request failure that left the connection in step
// (the peer answered with an error status), so it can be reused.
type keepConnError struct{ err error }

func (e keepConnError) Error() string { return e.err.Error() }
func (e keepConnError) Unwrap() error { return e.err }

// do runs one request on a pooled or new connection, bounded by ctx. All
// requests are idempotent, so a failure on a reused connection (most likely
// closed by the peer while idle) is retried once on a fresh one.
func (c *Client) do(ctx context.Context, addr string, req func(cc *clientConn) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		cc, reused, err := c.get(ctx, addr)
		if err != nil {
			return err
		}
		deadline, _ := ctx.Deadline()
		cc.conn.begin(c.StallTimeout, deadline)
		stop := context.AfterFunc(ctx, cc.conn.cancel)
		err = req(cc)
		interrupted := !stop()
		var keep keepConnError
		switch {
		case interrupted, err != nil && ctx.Err() != nil:
			_ = cc.conn.Close()
			return fmt.Errorf("blob: %s: %w", addr, context.Cause(ctx))
		case err != nil && !deadline.IsZero() && !time.Now().Before(deadline) && isTimeout(err):
			// The conn deadline is the ctx deadline and may fire a hair
			// before ctx notices; report the cause the caller knows.
			_ = cc.conn.Close()
			return fmt.Errorf("blob: %s: %w (%v)", addr, context.DeadlineExceeded, err)
		case err == nil:
			c.release(cc)
			return nil
		case errors.As(err, &keep):
			c.release(cc)
			return keep.err
		}
		_ = cc.conn.Close()
		if reused && attempt == 0 && isConnError(err) {
			continue
		}
		return err
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isConnError reports a transport failure (as opposed to a peer's answer or
// a local store failure).
func isConnError(err error) bool {
	var ne net.Error
	var re *RemoteError
	if errors.As(err, &re) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

// Push copies the local blob id to the peer at addr and returns once the
// peer holds it durably (its verified copy, written and flushed).
func (c *Client) Push(ctx context.Context, addr string, id ID) error {
	f, size, err := c.store.openRawFile(id)
	if err != nil {
		return err
	}
	defer f.Close()
	err = c.do(ctx, addr, func(cc *clientConn) error {
		var hdr [1 + 32 + 8]byte
		hdr[0] = opPush
		copy(hdr[1:33], id[:])
		binary.BigEndian.PutUint64(hdr[33:], uint64(size))
		if _, err := cc.bw.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := io.Copy(cc.bw, io.NewSectionReader(f, 0, size)); err != nil {
			return err
		}
		if err := cc.bw.Flush(); err != nil {
			return err
		}
		return asKeep(readStatus(cc.br, addr))
	})
	if err != nil {
		return fmt.Errorf("blob: push %s to %s: %w", id, addr, err)
	}
	return nil
}

// Fetch copies blob id from the peer at addr into the local store, verified
// on arrival: ErrNotFound if the peer does not hold it, ErrCorrupt if its
// copy is bad.
func (c *Client) Fetch(ctx context.Context, addr string, id ID) error {
	err := c.do(ctx, addr, func(cc *clientConn) error {
		var req [1 + 32]byte
		req[0] = opFetch
		copy(req[1:], id[:])
		if _, err := cc.bw.Write(req[:]); err != nil {
			return err
		}
		if err := cc.bw.Flush(); err != nil {
			return err
		}
		if err := readStatus(cc.br, addr); err != nil {
			return asKeep(err)
		}
		n, err := readUint64(cc.br)
		if err != nil {
			return err
		}
		if limit := maxStoredSize(c.store.MaxBlobSize()); n > uint64(limit) {
			return fmt.Errorf("%w: peer offers %d bytes, limit %d", ErrTooLarge, n, limit)
		}
		body := &exactReader{r: cc.br, n: int64(n)}
		err = c.store.PutRaw(ctx, id, body)
		if body.n != 0 {
			if err == nil {
				err = fmt.Errorf("%w: short body", ErrProtocol)
			}
			return err // out of step: the connection is dropped
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			// The whole body was read, so the connection is still usable.
			return keepConnError{err}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("blob: fetch %s from %s: %w", id, addr, err)
	}
	return nil
}

// Holds asks the peer at addr which of ids it holds (a copy exists; its
// health is checked by the peer's own scrub). Large lists are split.
func (c *Client) Holds(ctx context.Context, addr string, ids []ID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += maxHoldsBatch {
		batch := ids[start:min(start+maxHoldsBatch, len(ids))]
		err := c.do(ctx, addr, func(cc *clientConn) error {
			var hdr [5]byte
			hdr[0] = opHolds
			binary.BigEndian.PutUint32(hdr[1:], uint32(len(batch)))
			if _, err := cc.bw.Write(hdr[:]); err != nil {
				return err
			}
			for i := range batch {
				if _, err := cc.bw.Write(batch[i][:]); err != nil {
					return err
				}
			}
			if err := cc.bw.Flush(); err != nil {
				return err
			}
			if err := readStatus(cc.br, addr); err != nil {
				return asKeep(err)
			}
			n, err := readUint32(cc.br)
			if err != nil {
				return err
			}
			if int(n) != len(batch) {
				return fmt.Errorf("%w: asked about %d blobs, peer answered %d", ErrProtocol, len(batch), n)
			}
			bitmap := make([]byte, (n+7)/8)
			if _, err := io.ReadFull(cc.br, bitmap); err != nil {
				return err
			}
			for i := range batch {
				out = append(out, bitmap[i/8]&(1<<(i%8)) != 0)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("blob: holds on %s: %w", addr, err)
		}
	}
	return out, nil
}

// asKeep marks a peer's error answer as leaving the connection usable,
// except bad-request, after which the server hangs up.
func asKeep(err error) error {
	var re *RemoteError
	if errors.As(err, &re) && re.Status != statusBadRequest {
		return keepConnError{err}
	}
	return err
}
