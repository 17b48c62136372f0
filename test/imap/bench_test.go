package imap_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// Benchmarks behind `make bench` (run with -benchtime=1x: each does a fixed
// amount of work and reports its own figures). They use the LAN profile,
// fsync on, like test/bench.

func benchEnv(b *testing.B, change func(cfg *node.Config)) *env {
	return newEnv(b, cluster.Options{Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
		cfg.RepairInterval = time.Minute // the production default, not the harness's 300 ms
		if change != nil {
			change(cfg)
		}
	}})
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// BenchmarkFetch4KiB: UID FETCH n BODY.PEEK[] of random 4 KiB messages, one
// message per command, by 1, 8 and 32 clients spread over the three nodes.
// For scale: Dovecot on this kind of machine serves about 4,600 fetches/s to
// one client and 10,000 to eight. "cache=off" turns the body cache off:
// every fetch opens, decompresses and verifies the blob.
func BenchmarkFetch4KiB(b *testing.B) {
	for _, cache := range []bool{true, false} {
		b.Run(fmt.Sprintf("cache=%s", map[bool]string{true: "on", false: "off"}[cache]), func(b *testing.B) {
			benchmarkFetch(b, cache)
		})
	}
}

func benchmarkFetch(b *testing.B, cache bool) {
	e := benchEnv(b, func(cfg *node.Config) {
		if !cache {
			cfg.IMAP.BodyCacheBytes = -1
		}
	})
	u := e.user(b, "bench")
	const messages = 2000
	body := func(i int) []byte {
		m := message(fmt.Sprintf("bench %d", i), "")
		pad := make([]byte, 4096-len(m))
		for j := range pad {
			pad[j] = 'a' + byte((i+j)%26)
			if j%76 == 75 {
				pad[j] = '\n'
			}
		}
		return append(m, pad...)
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < messages; i += 16 {
				e.deliver(b, i%3, u, body(i))
			}
		}()
	}
	wg.Wait()
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			conns := make([]*imapclient.Client, clients)
			for i := range conns {
				conns[i] = e.dialTLS(b, i%3, u, nil)
				mustSelect(b, conns[i], "INBOX", true)
			}
			const duration = 3 * time.Second
			lat := make([][]time.Duration, clients)
			b.ResetTimer()
			start := time.Now()
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(uint64(i), 1))
					for time.Since(start) < duration {
						uid := imap.UID(1 + rnd.IntN(messages))
						t0 := time.Now()
						msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
							BodySection: []*imap.FetchItemBodySection{{Peek: true}},
						}).Collect()
						if err != nil || len(msgs) != 1 || len(msgs[0].BodySection) != 1 || len(msgs[0].BodySection[0].Bytes) != 4096 {
							b.Errorf("UID FETCH %d: %v", uid, err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
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
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "fetches/s")
			b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkSelect100k: SELECT of a 100,000-message mailbox, from every
// node (read barrier, status, the UID list and the keywords in one read).
func BenchmarkSelect100k(b *testing.B) {
	e := benchEnv(b, nil)
	u := e.user(b, "big")
	e.deliver(b, 0, u, message("seed", "the one body every copy shares"))
	s := e.c.Node(0).Store()
	mb, err := s.Mailbox(ctxT(b), u, "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	// Double the mailbox by copying it into itself (by reference, one
	// command each), then top it up to exactly 100,000.
	for n := 1; n < 100_000; {
		count := min(n, 100_000-n)
		if _, err := s.Copy(ctxT(b), u, mb.ID, state.UIDSet{{Start: 1, Stop: uint32(count)}}, mb.ID); err != nil {
			b.Fatal(err)
		}
		n += count
	}
	var conns []*imapclient.Client
	for i := range 3 {
		conns = append(conns, e.dialTLS(b, i, u, nil))
	}
	if d := mustSelect(b, conns[0], "INBOX", false); d.NumMessages != 100_000 {
		b.Fatalf("%d messages", d.NumMessages)
	}
	const rounds = 10
	var lat []time.Duration
	b.ResetTimer()
	for range rounds {
		for _, c := range conns {
			t0 := time.Now()
			d, err := c.Select("INBOX", nil).Wait()
			if err != nil || d.NumMessages != 100_000 {
				b.Fatalf("SELECT: %v", err)
			}
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "max_ms")
	b.ReportMetric(0, "ns/op")
}
