package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// Every Raft command this package writes starts with an envelope kind byte.
const (
	kindCommand byte = 1 // kind, 16-byte ProposalID, state machine data
	kindMarker  byte = 2 // a new leader's first entry; see Node.markLeaderReady
)

const commandHeaderLen = 1 + len(ProposalID{})

// errStopped is what every proposal gets once the state machine has failed.
var errStopped = errors.New("consensus: state machine stopped after a fatal error")

func encodeCommand(id ProposalID, data []byte) []byte {
	buf := make([]byte, commandHeaderLen+len(data))
	buf[0] = kindCommand
	copy(buf[1:], id[:])
	copy(buf[commandHeaderLen:], data)
	return buf
}

// applyResult is what the adapter hands back through raft's ApplyFuture.
type applyResult struct {
	data []byte
	err  error
}

// fsmAdapter turns raft's FSM calls into StateMachine calls and tracks the
// applied index, including entries the state machine never sees (leader
// markers, configuration changes), so that waitApplied can wake readers.
type fsmAdapter struct {
	sm      StateMachine
	logger  *slog.Logger
	onFatal func(error)

	mu      sync.Mutex
	applied uint64
	changed chan struct{} // closed and replaced whenever applied moves
	failed  error
}

func newFSMAdapter(sm StateMachine, logger *slog.Logger, onFatal func(error)) *fsmAdapter {
	return &fsmAdapter{
		sm:      sm,
		logger:  logger,
		onFatal: onFatal,
		applied: sm.AppliedIndex(),
		changed: make(chan struct{}),
	}
}

var (
	_ raft.BatchingFSM = (*fsmAdapter)(nil)
)

func (f *fsmAdapter) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

func (f *fsmAdapter) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if err := f.failure(); err != nil {
		for i := range out {
			out[i] = applyResult{err: err}
		}
		return out
	}
	entries := make([]Entry, 0, len(logs))
	positions := make([]int, 0, len(logs))
	var last uint64
	for i, l := range logs {
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) == 0 {
			return f.fail(out, fmt.Errorf("empty command at index %d", l.Index))
		}
		switch l.Data[0] {
		case kindMarker:
		case kindCommand:
			if len(l.Data) < commandHeaderLen {
				return f.fail(out, fmt.Errorf("short command at index %d", l.Index))
			}
			var id ProposalID
			copy(id[:], l.Data[1:commandHeaderLen])
			entries = append(entries, Entry{Index: l.Index, Term: l.Term, ID: id, Data: l.Data[commandHeaderLen:]})
			positions = append(positions, i)
		default:
			// A newer version wrote an entry this binary does not understand:
			// stop rather than diverge from the nodes that do.
			return f.fail(out, fmt.Errorf("unknown envelope kind %d at index %d", l.Data[0], l.Index))
		}
	}
	if len(entries) > 0 {
		results, err := f.sm.Apply(entries)
		if err != nil {
			return f.fail(out, err)
		}
		if len(results) != len(entries) {
			return f.fail(out, fmt.Errorf("state machine returned %d results for %d entries", len(results), len(entries)))
		}
		for j, p := range positions {
			out[p] = applyResult{data: results[j]}
		}
	}
	for i := range out {
		if out[i] == nil {
			out[i] = applyResult{}
		}
	}
	f.setApplied(last)
	return out
}

func (f *fsmAdapter) fail(out []any, err error) []any {
	f.mu.Lock()
	first := f.failed == nil
	if first {
		f.failed = fmt.Errorf("%w: %v", errStopped, err)
	}
	failed := f.failed
	f.mu.Unlock()
	if first {
		f.logger.Error("state machine failed; this node stops applying the log", "err", err)
		if f.onFatal != nil {
			go f.onFatal(err)
		}
	}
	for i := range out {
		out[i] = applyResult{err: failed}
	}
	return out
}

func (f *fsmAdapter) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fsmAdapter) setApplied(idx uint64) {
	f.mu.Lock()
	if idx > f.applied {
		f.applied = idx
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
}

// appliedIndex is the last log index this node has fully applied.
func (f *fsmAdapter) appliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// waitApplied returns once index idx has been applied on this node.
func (f *fsmAdapter) waitApplied(ctx context.Context, idx uint64) error {
	for {
		f.mu.Lock()
		applied, changed, failed := f.applied, f.changed, f.failed
		f.mu.Unlock()
		if applied >= idx {
			return nil
		}
		if failed != nil {
			return failed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Snapshot prefixes the state machine's stream with the adapter's applied
// index, which may be ahead of the state machine's (markers, configuration
// entries), so a node restored from it does not wait for an index it has.
func (f *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{snap: snap, applied: f.appliedIndex()}, nil
}

func (f *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var header [8]byte
	if _, err := io.ReadFull(rc, header[:]); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if err := f.sm.Restore(rc); err != nil {
		return err
	}
	applied := max(binary.BigEndian.Uint64(header[:]), f.sm.AppliedIndex())
	f.mu.Lock()
	f.applied = applied
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct {
	snap    Snapshot
	applied uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	var header [8]byte
	binary.BigEndian.PutUint64(header[:], s.applied)
	if _, err := sink.Write(header[:]); err != nil {
		_ = sink.Cancel()
		return err
	}
	if _, err := s.snap.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Release() }
