// Package consensus runs hashicorp/raft for one node and makes it usable from
// any node: Propose forwards to the leader and returns once the entry is
// applied locally (read-your-writes), ReadBarrier gives linearizable reads
// (read index), and membership operations let the node layer grow and shrink
// the cluster.
//
// Invariants:
//   - A successful Propose means the entry is committed on a majority and
//     applied on this node. Any doubt is an error (ErrNoQuorum), never success.
//   - Every retry of one proposal carries the same ProposalID, so the state
//     machine can apply it once.
//   - The state machine persists its own applied index; raft replays the log
//     after the newest snapshot on start and the state machine skips what it
//     already has (NoSnapshotRestoreOnStart).
//
// It knows nothing about mail and must never import another project package:
// connections arrive through the Link interface, already authenticated.
package consensus
