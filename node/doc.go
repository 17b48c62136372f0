// Package node runs one cluster member: it wires the authenticated cluster
// port, gossip membership (memberlist), consensus, the replicated store, the
// protocol listeners and the HTTP endpoints, and it owns their lifecycle.
//
// Membership rules it enforces:
//   - bootstrap-expect N: N fresh nodes that see each other through gossip
//     bootstrap one Raft cluster with the same server list; a node that sees
//     a member which already has Raft state never bootstraps.
//   - Only the leader reconciles gossip into Raft: a new member is added as a
//     nonvoter and promoted once it has caught up; a member that has been
//     gone longer than the dead-server timeout is removed only if gossip and
//     the cluster port both fail to reach it and the voters left keep a
//     quorum.
//   - A graceful leave marks itself leaving in gossip (the leader never adds
//     or promotes a leaving member), hands leadership over, then removes
//     itself.
//
// It must never hold package-level state: several nodes run in one test
// process.
package node
