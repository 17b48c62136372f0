package cluster

import "sync"

// links records which node pairs are cut. Gossip and cluster connections
// can be cut together (a real partition) or gossip alone (a failure
// detector that lies while Raft still works).
type links struct {
	mu        sync.Mutex
	byAddr    map[string]string // gossip address -> node ID
	cut       map[[2]string]bool
	gossipCut map[[2]string]bool
}

func newLinks() *links {
	return &links{byAddr: map[string]string{}, cut: map[[2]string]bool{}, gossipCut: map[[2]string]bool{}}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (l *links) register(gossipAddr, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byAddr[gossipAddr] = id
}

func (l *links) set(a, b string, gossipOnly bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gossipOnly {
		l.gossipCut[pair(a, b)] = true
	} else {
		l.cut[pair(a, b)] = true
	}
}

func (l *links) heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.cut)
	clear(l.gossipCut)
}

// view is one node's node.Links.
type view struct {
	l    *links
	self string
}

func (v view) Allowed(peer string) bool {
	v.l.mu.Lock()
	defer v.l.mu.Unlock()
	if id, ok := v.l.byAddr[peer]; ok {
		p := pair(v.self, id)
		return !v.l.cut[p] && !v.l.gossipCut[p]
	}
	return !v.l.cut[pair(v.self, peer)]
}
