package blob

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Link is the authenticated channel between nodes, handed in by the caller
// (in production a clusternet channel with mutual TLS). This package never
// creates listeners or TLS itself.
type Link interface {
	Accept() (net.Conn, error)
	Close() error
	Addr() net.Addr
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// Wire protocol, version 1. All integers big endian.
//
// A connection starts with the client's preamble "MCBLOB" 0x01 0x00, then
// carries any number of request/response exchanges, one at a time:
//
//	push:  'P' id[32] len u64 stored-bytes[len]  -> status
//	fetch: 'F' id[32]                            -> status; if OK: len u64 stored-bytes[len]
//	holds: 'H' count u32 id[32]*count            -> status; if OK: count u32 bitmap[(count+7)/8]
//
// status is one byte; any status other than OK is followed by msglen u16 and
// a message. After a bad-request status the server closes the connection.
// "stored-bytes" is the on-disk format (header + zstd frame), verified by the
// receiver before it becomes visible. A push is answered only once durable.
const (
	opPush  byte = 'P'
	opFetch byte = 'F'
	opHolds byte = 'H'

	statusOK         byte = 0
	statusNotFound   byte = 1
	statusCorrupt    byte = 2
	statusTooLarge   byte = 3
	statusError      byte = 4
	statusBadRequest byte = 5

	// maxHoldsBatch bounds one holds request (32 bytes an ID: 128 KiB).
	maxHoldsBatch = 4096
	maxMessageLen = 1024
)

var preamble = [8]byte{'M', 'C', 'B', 'L', 'O', 'B', 1, 0}

// RemoteError is a failure reported by the peer. Is matches the sentinel
// the status stands for (ErrNotFound, ErrCorrupt, ErrTooLarge, ErrProtocol).
type RemoteError struct {
	Addr    string
	Status  byte
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("blob: peer %s: %s", e.Addr, e.Message)
}

func (e *RemoteError) Unwrap() error {
	switch e.Status {
	case statusNotFound:
		return ErrNotFound
	case statusCorrupt:
		return ErrCorrupt
	case statusTooLarge:
		return ErrTooLarge
	case statusBadRequest:
		return ErrProtocol
	}
	return nil
}

func statusFor(err error) byte {
	switch {
	case err == nil:
		return statusOK
	case errors.Is(err, ErrNotFound):
		return statusNotFound
	case errors.Is(err, ErrCorrupt):
		return statusCorrupt
	case errors.Is(err, ErrTooLarge):
		return statusTooLarge
	case errors.Is(err, ErrProtocol):
		return statusBadRequest
	}
	return statusError
}

func writeStatus(w io.Writer, err error) error {
	st := statusFor(err)
	if st == statusOK {
		_, werr := w.Write([]byte{statusOK})
		return werr
	}
	msg := err.Error()
	if len(msg) > maxMessageLen {
		msg = msg[:maxMessageLen]
	}
	buf := make([]byte, 3+len(msg))
	buf[0] = st
	binary.BigEndian.PutUint16(buf[1:3], uint16(len(msg)))
	copy(buf[3:], msg)
	_, werr := w.Write(buf)
	return werr
}

// readStatus reads a status; a non-OK one comes back as *RemoteError.
func readStatus(r io.Reader, addr string) error {
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return err
	}
	if st[0] == statusOK {
		return nil
	}
	if st[0] > statusBadRequest {
		return fmt.Errorf("%w: peer %s sent unknown status %d", ErrProtocol, addr, st[0])
	}
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint16(l[:])
	if n > maxMessageLen {
		return fmt.Errorf("%w: peer %s sent a %d-byte error message", ErrProtocol, addr, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return err
	}
	return &RemoteError{Addr: addr, Status: st[0], Message: string(msg)}
}

func readUint64(r io.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

func readUint32(r io.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// timedConn puts a deadline on every Read and Write: the earlier of "now +
// stall" (no progress for that long is a dead peer) and the request's own
// deadline from its ctx. cancel makes pending and later I/O fail at once.
type timedConn struct {
	net.Conn

	mu       sync.Mutex
	stall    time.Duration
	deadline time.Time // zero: none
	canceled bool
}

func (t *timedConn) arm() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.canceled {
		return context.Canceled
	}
	d := time.Now().Add(t.stall)
	if !t.deadline.IsZero() && t.deadline.Before(d) {
		d = t.deadline
	}
	return t.Conn.SetDeadline(d)
}

func (t *timedConn) Read(p []byte) (int, error) {
	if err := t.arm(); err != nil {
		return 0, err
	}
	return t.Conn.Read(p)
}

func (t *timedConn) Write(p []byte) (int, error) {
	if err := t.arm(); err != nil {
		return 0, err
	}
	return t.Conn.Write(p)
}

// begin sets the limits for the next request.
func (t *timedConn) begin(stall time.Duration, deadline time.Time) {
	t.mu.Lock()
	t.stall, t.deadline, t.canceled = stall, deadline, false
	t.mu.Unlock()
}

// cancel interrupts blocked I/O and fails the next.
func (t *timedConn) cancel() {
	t.mu.Lock()
	t.canceled = true
	_ = t.Conn.SetDeadline(time.Unix(1, 0))
	t.mu.Unlock()
}
