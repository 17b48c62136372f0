package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

// BenchmarkPropose measures the consensus layer alone: 3 in-process nodes,
// fsync on (raft-boltdb log and a bbolt state machine), LAN timings, small
// commands, N concurrent proposers on the leader ("leader") or spread over
// all nodes, two thirds forwarded by followers ("spread").
func BenchmarkPropose(b *testing.B) {
	for _, where := range []string{"leader", "spread"} {
		for _, workers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/concurrent=%d", where, workers), func(b *testing.B) {
				c := newTestCluster(b, 3, func(cfg *Config) {
					cfg.Timing = LANTiming()
					cfg.ProposeTimeout = 10 * time.Second
				})
				l := c.leader()
				per := max(1, b.N*500/workers)
				lat := make([][]time.Duration, workers)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						n := c.nodes[l].node
						if where == "spread" {
							n = c.nodes[w%3].node
						}
						data, _ := json.Marshal(kvCommand{Op: "incr", Key: fmt.Sprint(w)})
						for range per {
							t0 := time.Now()
							if _, err := n.Propose(context.Background(), data); err != nil {
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
				pct := func(p float64) float64 {
					return float64(all[min(len(all)-1, int(float64(len(all))*p))].Microseconds()) / 1000
				}
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "proposals/s")
				b.ReportMetric(pct(0.5), "p50_ms")
				b.ReportMetric(pct(0.99), "p99_ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkReadBarrier measures one linearizable read point on an idle
// cluster, on the leader and on a follower (one RPC to the leader more).
func BenchmarkReadBarrier(b *testing.B) {
	for _, where := range []string{"leader", "follower"} {
		b.Run(where, func(b *testing.B) {
			c := newTestCluster(b, 3, func(cfg *Config) { cfg.Timing = LANTiming() })
			n := c.nodes[c.leader()].node
			if where == "follower" {
				n = c.nodes[c.follower()].node
			}
			const rounds = 500
			lat := make([]time.Duration, 0, rounds*b.N)
			b.ResetTimer()
			for range rounds * b.N {
				t0 := time.Now()
				if err := n.ReadBarrier(context.Background()); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
