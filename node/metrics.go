package node

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is this node's Prometheus registry. Each node has its own (never
// the global default registry) so several nodes can share a process.
type metrics struct {
	registry *prometheus.Registry
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "mailcluster", Name: name, Help: help}, f))
	}
	gauge("raft_leader", "1 if this node is the Raft leader.", func() float64 {
		if n.cons.IsLeader() {
			return 1
		}
		return 0
	})
	gauge("raft_has_leader", "1 if this node knows a leader.", func() float64 {
		if id, _ := n.cons.Leader(); id != "" {
			return 1
		}
		return 0
	})
	gauge("raft_term", "Current Raft term.", func() float64 { return float64(n.cons.Status().Term) })
	gauge("raft_commit_index", "Highest log index known committed.", func() float64 { return float64(n.cons.Status().CommitIndex) })
	gauge("raft_applied_index", "Highest log index applied to the local state.", func() float64 { return float64(n.cons.AppliedIndex()) })
	gauge("raft_last_index", "Highest log index stored locally.", func() float64 { return float64(n.cons.Status().LastIndex) })
	gauge("raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).", func() float64 {
		st := n.cons.Status()
		if st.LastContact.IsZero() {
			return 0
		}
		return time.Since(st.LastContact).Seconds()
	})
	gauge("leader_tasks_running", "Cluster-wide tasks running on this node (only while it leads).", func() float64 { return float64(len(n.LeaderTasks())) })
	gauge("members_alive", "Cluster members gossip sees alive, this node included.", func() float64 { return float64(n.gossip.list.NumMembers()) })
	gauge("blobs_held", "Message bodies stored on this node.", func() float64 { return float64(n.bodies.Stats().Held) })
	gauge("blobs_under_replicated", "Bodies this node is first in placement for that have fewer than R copies (last repair pass).", func() float64 {
		return float64(n.bodies.Stats().UnderReplicated)
	})
	// The outbound queue, from this node's state (it trails the leader by
	// the replication delay): one read per scrape for both gauges.
	reg.MustRegister(&queueCollector{
		n:       n,
		entries: prometheus.NewDesc("mailcluster_queue_entries", "Outbound queue entries: recipients outside the cluster not yet delivered, failed or removed.", nil, nil),
		oldest:  prometheus.NewDesc("mailcluster_queue_oldest_age_seconds", "Age of the oldest outbound queue entry, seconds since it was accepted (0 when the queue is empty).", nil, nil),
	})
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "mailcluster", Name: name, Help: help}, f))
	}
	counter("blobs_corrupt_found_total", "Corrupt local body copies detected (reads and scrub).", func() float64 { return float64(n.bodies.Stats().CorruptFound) })
	counter("blobs_repaired_total", "Body copies fetched from peers by repair, scrub or reads.", func() float64 { return float64(n.bodies.Stats().Repaired) })
	counter("blobs_deleted_total", "Unreferenced bodies removed by garbage collection.", func() float64 { return float64(n.bodies.Stats().Deleted) })
	counter("blob_push_failures_total", "Failed body copies to peers.", func() float64 { return float64(n.bodies.Stats().PushFailures) })
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mailcluster", Name: "build_info", Help: "Always 1; labels carry the version."}, []string{"version"})
	build.WithLabelValues(Version).Set(1)
	reg.MustRegister(build)
	return &metrics{registry: reg}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// queueCollector reports the queue's size and the age of its oldest entry
// from one Store.QueueStats per scrape.
type queueCollector struct {
	n               *Node
	entries, oldest *prometheus.Desc
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.entries; ch <- q.oldest }

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := q.n.store.QueueStats(context.Background())
	if err != nil {
		return // the state is closing: no sample rather than a wrong one
	}
	age := 0.0
	if st.OldestCreated != 0 {
		age = max(time.Since(time.Unix(0, st.OldestCreated)).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(q.entries, prometheus.GaugeValue, float64(st.Len))
	ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, age)
}
