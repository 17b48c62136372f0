package blob

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runConcurrently runs fn b.N times spread over conc goroutines; fn gets a
// unique sequence number and the goroutine's own scratch buffer.
func runConcurrently(b *testing.B, conc int, size int, fn func(i int64, buf []byte) error) {
	base := body(1, size)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := slices.Clone(base)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				binary.BigEndian.PutUint64(buf, uint64(i)) // every body unique
				if err := fn(i, buf); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}

// prepareShards creates the shard directories the benchmark's first n bodies
// will land in, as in a store that has been in use for a while (once a store
// holds a few hundred thousand blobs every shard directory exists).
func prepareShards(b *testing.B, s *Store, n int, size int) {
	buf := body(1, size)
	for i := int64(1); i <= int64(n); i++ {
		binary.BigEndian.PutUint64(buf, uint64(i))
		if err := s.ensureShard(s.shardDir(Sum(buf))); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.flushAll(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPut measures durable Puts per second and the sync system calls
// each one costs, per sync mode, body size and concurrency.
//
//	go test -run '^$' -bench BenchmarkPut -benchtime 3000x ./replication/blob/
func BenchmarkPut(b *testing.B) {
	for _, mode := range modes() {
		for _, size := range []int{4 << 10, 64 << 10} {
			for _, conc := range []int{1, 32} {
				for _, warm := range []bool{false, true} {
					name := fmt.Sprintf("%s/%dKiB/c%d/fresh", mode, size>>10, conc)
					if warm {
						name = fmt.Sprintf("%s/%dKiB/c%d/warm", mode, size>>10, conc)
					}
					b.Run(name, func(b *testing.B) {
						s := openStore(b, Options{Sync: mode})
						if warm {
							prepareShards(b, s, b.N, size)
						}
						start := s.Stats()
						b.SetBytes(int64(size))
						runConcurrently(b, conc, size, func(_ int64, buf []byte) error {
							_, _, err := s.Put(context.Background(), bytes.NewReader(buf), 0)
							return err
						})
						st := s.Stats()
						b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
						b.ReportMetric(float64(st.SyncCalls-start.SyncCalls)/float64(b.N), "fsyncs/put")
						b.ReportMetric(float64(b.N)/float64(st.Commits-start.Commits), "puts/commit")
						b.ReportMetric(float64((st.FlushTime-start.FlushTime).Microseconds())/float64(st.Commits-start.Commits), "µs/flush")
					})
				}
			}
		}
	}
}

// BenchmarkDeliver is the body half of a delivery on a 3-node loopback
// cluster (all three stores on this machine's one disk), 4 KiB bodies, R=3:
// "seq" is Store.Put then Replicate, "overlap" is Replicator.Put (local
// flush and pushes in parallel). Both return once W=2 copies are durable.
//
//	go test -run '^$' -bench BenchmarkDeliver -benchtime 3000x ./replication/blob/
func BenchmarkDeliver(b *testing.B) {
	for _, mode := range modes() {
		for _, how := range []string{"seq", "overlap"} {
			for _, conc := range []int{1, 32} {
				b.Run(fmt.Sprintf("%s/%s/c%d", mode, how, conc), func(b *testing.B) {
					c := newBenchCluster(b, mode)
					var syncs0 int64
					for _, nd := range c {
						syncs0 += nd.store.Stats().SyncCalls
					}
					runConcurrently(b, conc, 4<<10, func(_ int64, buf []byte) error {
						ctx := context.Background()
						if how == "overlap" {
							_, _, err := c[0].repl.Put(ctx, bytes.NewReader(buf), 0)
							return err
						}
						id, _, err := c[0].store.Put(ctx, bytes.NewReader(buf), 0)
						if err != nil {
							return err
						}
						return c[0].repl.Replicate(ctx, id)
					})
					for _, nd := range c {
						nd.repl.Close() // let background pushes finish before counting
					}
					var syncs, commits int64
					var flush time.Duration
					for _, nd := range c {
						st := nd.store.Stats()
						syncs += st.SyncCalls
						commits += st.Commits
						flush += st.FlushTime
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
					b.ReportMetric(float64(syncs-syncs0)/float64(b.N), "fsyncs/delivery")
					b.ReportMetric(float64(flush.Microseconds())/float64(commits), "µs/flush")
				})
			}
		}
	}
}

type benchNode struct {
	store *Store
	repl  *Replicator
}

func newBenchCluster(b *testing.B, mode SyncMode) []*benchNode {
	var ms []Member
	var nodes []*benchNode
	var peers []*peer
	for i := 0; i < 3; i++ {
		p := startPeer(b, Options{Sync: mode})
		peers = append(peers, p)
		ms = append(ms, Member{ID: fmt.Sprintf("n%d", i), Addr: p.addr})
	}
	for i, p := range peers {
		r := NewReplicator(p.store, p.client, staticMembers{self: ms[i], all: ms}, nil, ReplicatorOptions{Replicas: 3})
		b.Cleanup(r.Close)
		nodes = append(nodes, &benchNode{store: p.store, repl: r})
	}
	return nodes
}

type staticMembers struct {
	self Member
	all  []Member
}

func (s staticMembers) Self() Member          { return s.self }
func (s staticMembers) LiveMembers() []Member { return s.all }
