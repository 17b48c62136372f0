package consensus

import "io"

// ProposalID names one proposal. Propose fills it in once and keeps it across
// retries, so a state machine that remembers recent IDs applies a retried
// proposal exactly once.
type ProposalID [16]byte

// Entry is one committed command handed to the state machine.
type Entry struct {
	Index uint64     // Raft log index; strictly increasing, a natural MODSEQ
	Term  uint64     // Raft term the entry was appended in
	ID    ProposalID // identical for every retry of the same proposal
	Data  []byte     // the command bytes given to Propose
}

// StateMachine is the replicated, persistent state that consensus drives.
//
// The contract:
//   - Apply receives committed entries in log order, without gaps between
//     commands, and must apply them atomically as one batch, storing the last
//     applied index in the same transaction as the data.
//   - Entries at or below AppliedIndex were applied before a restart and must
//     be skipped: on start consensus replays the log after the last snapshot
//     (raft's NoSnapshotRestoreOnStart), relying on this.
//   - An entry whose ID was applied recently (a retry after a leader change)
//     must not change state again; it returns the result of the first apply.
//   - Apply is deterministic: no clock, no randomness, no local configuration.
//   - Apply returns one result per entry; the result travels back to the
//     proposer, possibly over the network, so it is plain bytes.
//   - An error from Apply means the node can no longer follow the log safely
//     (disk failure, unknown command version); consensus stops the node.
type StateMachine interface {
	Apply(entries []Entry) ([][]byte, error)
	AppliedIndex() uint64
	// Snapshot captures a consistent view quickly; the expensive copy happens
	// in WriteTo, concurrently with later Apply calls.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with a snapshot's content.
	Restore(r io.Reader) error
}

// Scoped is a StateMachine whose reads of some kind (a scope it names)
// depend on only part of the log. ScopeIndex(scope) is an index at or after
// the last applied entry that changed what such reads see; ScopedReadBarrier
// waits for that instead of the whole commit index, so it does not wait
// for unrelated writes to arrive. An unknown scope must answer the applied
// index.
type Scoped interface {
	ScopeIndex(scope string) uint64
}

// Snapshot is a point-in-time view of the state machine.
type Snapshot interface {
	WriteTo(w io.Writer) (int64, error)
	Release()
}
