package node

import "github.com/mailcluster/mailcluster/replication/blob"

// blobMembers is the blob layer's view of membership: the live gossip
// members, addressed at their cluster port (the blob channel rides on it).
type blobMembers Node

func (b *blobMembers) LiveMembers() []blob.Member {
	n := (*Node)(b)
	var out []blob.Member
	for _, m := range n.gossip.members() {
		out = append(out, blob.Member{ID: m.ID, Zone: m.Zone, Addr: m.Cluster})
	}
	return out
}

func (b *blobMembers) Self() blob.Member {
	n := (*Node)(b)
	rec := n.gossip.localRecord()
	return blob.Member{ID: rec.ID, Zone: rec.Zone, Addr: rec.Cluster}
}
