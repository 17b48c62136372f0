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

// KnownMembers are every server in the Raft configuration, alive or not:
// after a partition heals, gossip may still call a peer dead while it can
// already serve a body.
func (b *blobMembers) KnownMembers() []blob.Member {
	n := (*Node)(b)
	servers, err := n.cons.Configuration()
	if err != nil {
		return nil
	}
	out := make([]blob.Member, 0, len(servers))
	for _, s := range servers {
		out = append(out, blob.Member{ID: s.ID, Addr: s.Address})
	}
	return out
}
