package node

import (
	"encoding/json"
	"fmt"
)

// maxRecordSize is memberlist's limit on node metadata; above it memberlist panics.
const maxRecordSize = 512

// Record is what a node tells every other node about itself through gossip.
// Keep it small: it travels in every gossip exchange.
type Record struct {
	ID       string            `json:"id"`
	Zone     string            `json:"z,omitempty"`
	Cluster  string            `json:"c"`           // cluster port: Raft, forwarding, blob copies
	HTTP     string            `json:"h,omitempty"` // health, metrics, admin API
	Services map[string]string `json:"s,omitempty"` // client endpoints by name (smtp, imap, ...)
	Version  string            `json:"v,omitempty"`
	Expect   int               `json:"e,omitempty"` // bootstrap-expect this node was started with
	Fresh    bool              `json:"f,omitempty"` // no Raft state yet: may take part in a bootstrap
	Leaving  bool              `json:"l,omitempty"` // leaving for good: the leader must not add it back
}

func (r Record) encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > maxRecordSize {
		return nil, fmt.Errorf("node record is %d bytes, gossip allows %d: shorten node_id, zone or advertised addresses", len(b), maxRecordSize)
	}
	return b, nil
}

func decodeRecord(b []byte) (Record, bool) {
	var r Record
	if len(b) == 0 || json.Unmarshal(b, &r) != nil || r.ID == "" || r.Cluster == "" {
		return Record{}, false
	}
	return r, true
}
