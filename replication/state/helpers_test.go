package state

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()

// harness drives one FSM the way consensus does: increasing indexes, one
// proposal ID per command, events collected from OnCommit.
type harness struct {
	tb    testingT
	path  string
	f     *FSM
	index uint64
	now   int64

	mu     sync.Mutex
	events []Event
}

// testingT is the part of testing.TB that rapid.T also has.
type testingT interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	return newHarnessIn(tb, tb.TempDir())
}

func newHarnessIn(tb testingT, dir string) *harness {
	tb.Helper()
	h := &harness{tb: tb, path: filepath.Join(dir, "state.db"), now: t0}
	h.open()
	tb.Cleanup(func() { h.f.Close() })
	return h
}

func (h *harness) open() {
	h.tb.Helper()
	f, err := Open(h.path, Options{OnCommit: h.onCommit, NoSync: true})
	if err != nil {
		h.tb.Fatal(err)
	}
	h.f = f
}

func (h *harness) reopen() {
	h.tb.Helper()
	if err := h.f.Close(); err != nil {
		h.tb.Fatal(err)
	}
	h.open()
}

func (h *harness) onCommit(ev []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev...)
}

func (h *harness) takeEvents() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	ev := h.events
	h.events = nil
	return ev
}

func proposalID(n uint64) consensus.ProposalID {
	var id consensus.ProposalID
	binary.BigEndian.PutUint64(id[8:], n)
	id[0] = 0xAB
	return id
}

// entry encodes cmd as the next log entry (it stamps Time if unset).
func (h *harness) entry(cmd Command) consensus.Entry {
	h.tb.Helper()
	h.index++
	h.now += int64(time.Second)
	data, err := Encode(stamp(cmd, h.now))
	if err != nil {
		h.tb.Fatal(err)
	}
	return consensus.Entry{Index: h.index, Term: 1, ID: proposalID(h.index), Data: data}
}

// apply applies cmds as one batch and decodes the results.
func (h *harness) apply(cmds ...Command) []Result {
	h.tb.Helper()
	entries := make([]consensus.Entry, len(cmds))
	for i, c := range cmds {
		entries[i] = h.entry(c)
	}
	return h.applyEntries(entries)
}

func (h *harness) applyEntries(entries []consensus.Entry) []Result {
	h.tb.Helper()
	raw, err := h.f.Apply(entries)
	if err != nil {
		h.tb.Fatal(err)
	}
	out := make([]Result, len(raw))
	for i, b := range raw {
		r, err := DecodeResult(b)
		if err != nil {
			h.tb.Fatalf("result %d: %v", i, err)
		}
		out[i] = r
	}
	return out
}

func (h *harness) do(cmd Command) Result {
	h.tb.Helper()
	return h.apply(cmd)[0]
}

// must applies cmd and fails the test if the command failed.
func must[T Result](h *harness, cmd Command) T {
	h.tb.Helper()
	r := h.do(cmd)
	if err := r.Err(); err != nil {
		h.tb.Fatalf("%T: %v", cmd, err)
	}
	v, ok := r.(T)
	if !ok {
		h.tb.Fatalf("%T: result %T", cmd, r)
	}
	return v
}

// stamp sets the command's Time when the caller left it zero (every
// command kind has one: the table checks it).
func stamp(cmd Command, now int64) Command {
	if v := reflect.ValueOf(cmd); v.Kind() == reflect.Pointer {
		if t := v.Elem().FieldByName("Time"); t.IsValid() && t.Int() == 0 {
			t.SetInt(now)
		}
	}
	return cmd
}

func (h *harness) view(fn func(tx *Tx) error) {
	h.tb.Helper()
	if err := h.f.View(fn); err != nil {
		h.tb.Fatal(err)
	}
}

func (h *harness) mailbox(account, name string) Mailbox {
	h.tb.Helper()
	var mb Mailbox
	h.view(func(tx *Tx) error {
		var err error
		mb, err = tx.Mailbox(account, name)
		return err
	})
	return mb
}

func (h *harness) uids(mailbox uint64) []uint32 {
	h.tb.Helper()
	var out []uint32
	h.view(func(tx *Tx) error {
		var err error
		out, err = tx.UIDs(mailbox)
		return err
	})
	return out
}

func (h *harness) account(addr string) Account {
	h.tb.Helper()
	var a Account
	h.view(func(tx *Tx) error {
		var err error
		a, err = tx.Account(addr)
		return err
	})
	return a
}

func (h *harness) blob(id BlobID) (Blob, error) {
	var b Blob
	err := h.f.View(func(tx *Tx) error {
		var err error
		b, err = tx.Blob(id)
		return err
	})
	return b, err
}

// setup makes domain example.org with accounts alice and bob.
func (h *harness) setup() {
	h.tb.Helper()
	must[Done](h, &AddDomain{Name: "example.org"})
	must[AccountResult](h, &AddAccount{Address: "alice@example.org", PasswordHash: "h1"})
	must[AccountResult](h, &AddAccount{Address: "bob@example.org", PasswordHash: "h2"})
}

func blobID(n int) BlobID {
	var id BlobID
	binary.BigEndian.PutUint64(id[24:], uint64(n)+1)
	id[0] = 0x5A
	return id
}

func (h *harness) deliver(account, mailbox string, n int, size int64, flags Flags) TargetResult {
	h.tb.Helper()
	r := must[DeliverResult](h, &Deliver{Blob: blobID(n), Size: size, Summary: []byte(fmt.Sprintf(`{"n":%d}`, n)),
		Targets: []DeliverTarget{{Account: account, Mailbox: mailbox, Flags: flags}}})
	if err := r.Targets[0].Err(); err != nil {
		h.tb.Fatalf("deliver: %v", err)
	}
	return r.Targets[0]
}

// dump renders every bucket's keys and values: two FSMs with equal dumps
// hold identical state.
func dump(tb testingT, f *FSM) string {
	tb.Helper()
	var b strings.Builder
	f.mu.RLock()
	defer f.mu.RUnlock()
	err := f.db.View(func(tx *bolt.Tx) error {
		var names []string
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		}); err != nil {
			return err
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "[%s]\n", n)
			if err := tx.Bucket([]byte(n)).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&b, "%x=%x\n", k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
