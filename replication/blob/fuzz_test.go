package blob

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServerRequest feeds arbitrary bytes after the preamble to one server
// connection: it must answer or hang up, never panic or hang.
//
//	go test -run '^$' -fuzz FuzzServerRequest -fuzztime 60s ./replication/blob/
func FuzzServerRequest(f *testing.F) {
	s := openStore(f, Options{MaxBlobSize: 1 << 20})
	good := storedForm(f, []byte("hello"))
	id := Sum([]byte("hello"))
	push := append(append([]byte{opPush}, id[:]...), binary.BigEndian.AppendUint64(nil, uint64(len(good)))...)
	f.Add(append(push, good...))
	f.Add(append([]byte{opFetch}, id[:]...))
	f.Add(append(append([]byte{opHolds}, 0, 0, 0, 1), id[:]...))
	f.Add([]byte{opHolds, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := NewServer(s, nil, nil)
		srv.IdleTimeout, srv.StallTimeout = 200*time.Millisecond, 200*time.Millisecond
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.handle(context.Background(), server)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = client.Write(append(preamble[:], data...))
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server connection did not end")
		}
	})
}

// FuzzPutRaw: whatever a peer sends as a stored copy, PutRaw either stores
// content that hashes to the ID or refuses it.
func FuzzPutRaw(f *testing.F) {
	s := openStore(f, Options{MaxBlobSize: 1 << 20})
	f.Add(storedForm(f, []byte("hello")))
	f.Add(storedForm(f, bytes.Repeat([]byte("abc"), 10000)))
	f.Add([]byte("MCBz\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id := Sum([]byte("hello"))
		err := s.PutRaw(context.Background(), id, bytes.NewReader(data))
		if err == nil {
			if got := readAll(t, s, id); string(got) != "hello" {
				t.Fatalf("PutRaw accepted content %q for the ID of %q", got, "hello")
			}
			return
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
