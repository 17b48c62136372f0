package blob

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// Server answers peers' push, fetch and holds requests against a Store.
type Server struct {
	store *Store
	link  Link
	log   *slog.Logger

	// IdleTimeout closes a connection that sends no request for this long.
	IdleTimeout time.Duration
	// StallTimeout fails a request that makes no progress for this long.
	StallTimeout time.Duration
	// MaxConns bounds concurrent connections; extra ones are closed at once.
	MaxConns int
}

// NewServer returns a server for store over link. Adjust the exported
// fields before Serve if the defaults do not fit.
func NewServer(store *Store, link Link, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		store:        store,
		link:         link,
		log:          logger,
		IdleTimeout:  90 * time.Second,
		StallTimeout: 30 * time.Second,
		MaxConns:     1024,
	}
}

// Serve accepts connections until ctx ends, then closes the link's listening
// side and every open connection, waits for the handlers and returns nil. It
// returns an error if Accept fails for another reason.
func (s *Server) Serve(ctx context.Context) error {
	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
		wg    sync.WaitGroup
	)
	closeAll := func() {
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.link.Close()
		closeAll()
	})
	defer func() {
		stop()
		closeAll()
		wg.Wait()
	}()

	backoff := 5 * time.Millisecond
	for {
		conn, err := s.link.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("blob: serve: %w", err)
			}
			s.log.Warn("blob: accept failed", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		mu.Lock()
		if ctx.Err() != nil || len(conns) >= s.MaxConns {
			mu.Unlock()
			_ = conn.Close()
			continue
		}
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, conn)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
		}()
	}
}

// handle serves one connection until it closes, idles out or misbehaves.
func (s *Server) handle(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	peer := raw.RemoteAddr().String()
	defer func() {
		// Belt and braces: nothing a peer sends may bring the node down.
		if p := recover(); p != nil {
			s.log.Error("blob: panic serving peer", "peer", peer, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	conn := &timedConn{Conn: raw}
	br := bufio.NewReaderSize(conn, copyBufferSize)
	bw := bufio.NewWriterSize(conn, copyBufferSize)

	conn.begin(s.StallTimeout, time.Time{})
	var pre [len(preamble)]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil || pre != preamble {
		s.reject(bw, peer, fmt.Errorf("%w: bad preamble", ErrProtocol))
		return
	}
	for {
		conn.begin(s.IdleTimeout, time.Time{})
		op, err := br.ReadByte()
		if err != nil {
			return // closed, idle or shut down: nothing to answer
		}
		conn.begin(s.StallTimeout, time.Time{})
		var keep bool
		switch op {
		case opPush:
			keep = s.push(ctx, br, bw, peer)
		case opFetch:
			keep = s.fetch(ctx, br, bw, peer)
		case opHolds:
			keep = s.holds(br, bw, peer)
		default:
			s.reject(bw, peer, fmt.Errorf("%w: unknown request type 0x%02x", ErrProtocol, op))
			return
		}
		if !keep {
			return
		}
	}
}

// reject answers a malformed request; the caller then closes the connection.
func (s *Server) reject(bw *bufio.Writer, peer string, err error) {
	s.log.Warn("blob: rejecting peer request", "peer", peer, "err", err)
	if writeStatus(bw, err) == nil {
		_ = bw.Flush()
	}
}

func (s *Server) respond(bw *bufio.Writer, err error) bool {
	return writeStatus(bw, err) == nil && bw.Flush() == nil
}

func (s *Server) push(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, peer string) bool {
	var id ID
	if _, err := io.ReadFull(br, id[:]); err != nil {
		return false
	}
	n, err := readUint64(br)
	if err != nil {
		return false
	}
	if limit := maxStoredSize(s.store.MaxBlobSize()); n > uint64(limit) {
		// We will not read that many bytes; answer and hang up.
		s.reject(bw, peer, fmt.Errorf("%w: push of %d bytes over limit %d", ErrTooLarge, n, limit))
		return false
	}
	body := &exactReader{r: br, n: int64(n)}
	err = s.store.PutRaw(ctx, id, body)
	if body.n != 0 {
		// Not all of the body was read (a local failure or a broken
		// stream): the connection is out of step, so drop it.
		if err == nil {
			err = fmt.Errorf("%w: body shorter than declared", ErrProtocol)
		}
		s.log.Warn("blob: push failed", "peer", peer, "id", id.String(), "err", err)
		s.respond(bw, err)
		return false
	}
	if err != nil {
		s.log.Warn("blob: push refused", "peer", peer, "id", id.String(), "err", err)
	}
	return s.respond(bw, err)
}

func (s *Server) fetch(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, peer string) bool {
	var id ID
	if _, err := io.ReadFull(br, id[:]); err != nil {
		return false
	}
	f, n, err := s.store.openRawFile(id)
	if err != nil {
		return s.respond(bw, err)
	}
	defer f.Close()
	var hdr [9]byte
	hdr[0] = statusOK
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := bw.Write(hdr[:]); err != nil {
		return false
	}
	if _, err := io.CopyN(bw, ctxReader{ctx: ctx, r: f}, n); err != nil {
		// The length is promised already; the only honest way out is to
		// hang up so the client sees a short stream.
		s.log.Warn("blob: fetch send failed", "peer", peer, "id", id.String(), "err", err)
		return false
	}
	return bw.Flush() == nil
}

func (s *Server) holds(br *bufio.Reader, bw *bufio.Writer, peer string) bool {
	count, err := readUint32(br)
	if err != nil {
		return false
	}
	if count > maxHoldsBatch {
		s.reject(bw, peer, fmt.Errorf("%w: holds batch of %d over %d", ErrProtocol, count, maxHoldsBatch))
		return false
	}
	bitmap := make([]byte, 1+4+(count+7)/8)
	bitmap[0] = statusOK
	binary.BigEndian.PutUint32(bitmap[1:5], count)
	var id ID
	for i := uint32(0); i < count; i++ {
		if _, err := io.ReadFull(br, id[:]); err != nil {
			return false
		}
		if s.store.Has(id) {
			bitmap[5+i/8] |= 1 << (i % 8)
		}
	}
	if _, err := bw.Write(bitmap); err != nil {
		return false
	}
	return bw.Flush() == nil
}
