package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// lanCluster starts 3 in-process nodes with the LAN profile (the timings a
// real deployment uses) and fsync on.
func lanCluster(b *testing.B) *cluster.Cluster {
	return cluster.New(b, cluster.Options{Nodes: 3, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
	}})
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// BenchmarkProposals measures commit throughput and latency of small
// commands proposed round-robin on all three nodes (followers forward to
// the leader), at 1, 16 and 64 concurrent proposers.
func BenchmarkProposals(b *testing.B) {
	for _, workers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("concurrent=%d", workers), func(b *testing.B) {
			c := lanCluster(b)
			var seq atomic.Int64
			lat := make([][]time.Duration, workers)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := max(1, b.N*200/workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := c.Node(w % 3)
					for range per {
						i := seq.Add(1)
						cmd, _ := state.Encode(state.AddDomain{Time: time.Now().UnixNano(), Name: fmt.Sprintf("d%d.bench", i)})
						t0 := time.Now()
						if _, err := n.Consensus().Propose(context.Background(), cmd); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "proposals/s")
			b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkLeaderFailover kills the leader while a follower keeps writing,
// and reports how long writes were unavailable as a client sees it: from
// the kill to the end of the first write that was started after it.
func BenchmarkLeaderFailover(b *testing.B) {
	var gaps []time.Duration
	for range b.N {
		c := lanCluster(b)
		leader := c.Leader()
		writer := c.Node((leader + 1) % 3)
		var killAt, ok atomic.Int64 // unix nanos
		stop := make(chan struct{})
		done := make(chan time.Duration, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				started := time.Now()
				cmd, _ := state.Encode(state.AddDomain{Time: started.UnixNano(), Name: fmt.Sprintf("f%d.bench", i)})
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := writer.Consensus().Propose(ctx, cmd)
				cancel()
				if err != nil {
					continue
				}
				ok.Store(time.Now().UnixNano())
				if k := killAt.Load(); k != 0 && started.UnixNano() > k {
					done <- time.Since(time.Unix(0, k))
					return
				}
			}
		}()
		cluster.WaitFor(b, "writes flowing", 10*time.Second, func() bool { return ok.Load() != 0 })
		killAt.Store(time.Now().UnixNano())
		c.Kill(leader)
		select {
		case gap := <-done:
			gaps = append(gaps, gap)
		case <-time.After(30 * time.Second):
			b.Fatal("writes did not resume within 30 s")
		}
		close(stop)
		c.Close()
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	b.ReportMetric(float64(percentile(gaps, 0.5).Milliseconds()), "unavailable_p50_ms")
	b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "unavailable_max_ms")
	b.ReportMetric(0, "ns/op")
}
