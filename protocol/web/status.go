package web

import "time"

// ClusterStatus is the answer of GET /api/status: the cluster as one node
// sees it, with every member's own Raft view where it could be reached.
type ClusterStatus struct {
	Node     string         `json:"node"`   // the node that answered
	Leader   string         `json:"leader"` // leader ID, empty if none is known
	Term     uint64         `json:"term"`
	Members  []MemberStatus `json:"members"`
	Storage  *StorageStatus `json:"storage,omitempty"`
	Observed time.Time      `json:"observed"`
}

// MemberStatus is one member: what gossip says about it, its place in the
// Raft configuration, and its own report.
type MemberStatus struct {
	ID            string            `json:"id"`
	Zone          string            `json:"zone,omitempty"`
	Gossip        string            `json:"gossip"`   // alive, suspect, failed, left, unknown
	Suffrage      string            `json:"suffrage"` // voter, nonvoter, none
	State         string            `json:"state,omitempty"`
	Term          uint64            `json:"term,omitempty"`
	LastIndex     uint64            `json:"last_index,omitempty"`
	CommitIndex   uint64            `json:"commit_index,omitempty"`
	AppliedIndex  uint64            `json:"applied_index,omitempty"`
	Lag           uint64            `json:"lag"` // leader's commit index minus this member's applied index
	LastContactMS int64             `json:"last_contact_ms,omitempty"`
	Cluster       string            `json:"cluster,omitempty"`
	HTTP          string            `json:"http,omitempty"`
	Services      map[string]string `json:"services,omitempty"`
	Version       string            `json:"version,omitempty"`
	Error         string            `json:"error,omitempty"` // why its own report is missing
}

// StorageStatus summarises message body replication on the answering node.
type StorageStatus struct {
	BlobsHeld        int64     `json:"blobs_held"`
	BlobsCountedAt   time.Time `json:"blobs_counted_at,omitzero"` // when BlobsHeld was counted; zero: not yet
	UnderReplicated  int64     `json:"under_replicated"`
	Corrupt          int64     `json:"corrupt_found"`
	Repaired         int64     `json:"repaired"`
	ReplicationCount int       `json:"replicas"`
}
