package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/consensus"
)

// ClusterStatus gathers every member's own Raft report, for `mailcluster
// status` and GET /api/status.
func (n *Node) ClusterStatus(ctx context.Context) (api.ClusterStatus, error) {
	out := api.ClusterStatus{Node: n.cfg.NodeID, Observed: time.Now().UTC()}
	out.Leader, _ = n.cons.Leader()
	out.Term = n.cons.Status().Term
	out.LeaderTasks = n.LeaderTasks()

	servers, _ := n.cons.Configuration()
	byID := make(map[string]*api.MemberStatus)
	get := func(id string) *api.MemberStatus {
		m, ok := byID[id]
		if !ok {
			m = &api.MemberStatus{ID: id, Gossip: "failed", Suffrage: "none"}
			byID[id] = m
		}
		return m
	}
	for _, s := range servers {
		m := get(s.ID)
		m.Cluster = s.Address
		m.Suffrage = "nonvoter"
		if s.Voter {
			m.Suffrage = "voter"
		}
	}
	for _, mem := range n.gossip.members() {
		m := get(mem.ID)
		m.Gossip = "alive"
		m.Zone, m.Cluster, m.HTTP, m.Version = mem.Zone, mem.Cluster, mem.HTTP, mem.Version
		m.Services = mem.Services
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	reports := make(map[string]consensus.Status)
	errs := make(map[string]string)
	for id, m := range byID {
		if m.Cluster == "" {
			continue
		}
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := n.cons.PeerStatus(cctx, addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[id] = "unreachable: " + err.Error()
				return
			}
			reports[id] = st
		}(id, m.Cluster)
	}
	wg.Wait()

	var leaderCommit uint64
	if st, ok := reports[out.Leader]; ok {
		leaderCommit = st.CommitIndex
	}
	for id, m := range byID {
		if st, ok := reports[id]; ok {
			m.State, m.Term = st.State, st.Term
			m.LastIndex, m.CommitIndex, m.AppliedIndex = st.LastIndex, st.CommitIndex, st.AppliedIndex
			if leaderCommit > st.AppliedIndex {
				m.Lag = leaderCommit - st.AppliedIndex
			}
			if !st.LastContact.IsZero() {
				m.LastContactMS = time.Since(st.LastContact).Milliseconds()
			}
		} else {
			m.Error = errs[id]
		}
		out.Members = append(out.Members, *m)
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].ID < out.Members[j].ID })
	bs := n.bodies.Stats()
	out.Storage = &api.StorageStatus{
		BlobsHeld:        bs.Held,
		BlobsCountedAt:   bs.HeldAt,
		UnderReplicated:  bs.UnderReplicated,
		Corrupt:          bs.CorruptFound,
		Repaired:         bs.Repaired,
		ReplicationCount: n.cfg.Replicas,
	}
	return out, nil
}
