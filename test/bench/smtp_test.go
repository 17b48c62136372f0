package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// smtpResult mirrors smtpload's JSON output.
type smtpResult struct {
	Messages   int     `json:"messages"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
}

// smtpBuildLoad builds the load generator into a temporary folder.
func smtpBuildLoad(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "smtpload")
	gobin, err := exec.LookPath("go")
	if err != nil {
		b.Fatalf("the go tool is needed to build the load generator: %v", err)
	}
	cmd := exec.Command(gobin, "build", "-o", bin, "github.com/mailcluster/mailcluster/test/bench/smtpload")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build smtpload: %v\n%s", err, out)
	}
	return bin
}

// smtpCluster is a 3-node cluster with the LAN profile (the timings a real
// deployment uses), fsync on, the production repair interval (the harness's
// 300 ms would stat every body three times a second), and users
// bench0…bench9@example.test.
func smtpCluster(b *testing.B) (*cluster.Cluster, []string) {
	return smtpClusterWith(b, nil)
}

// smtpClusterWith is smtpCluster with a change to every node's
// configuration.
func smtpClusterWith(b *testing.B, change func(cfg *node.Config)) (*cluster.Cluster, []string) {
	b.Helper()
	c := cluster.New(b, cluster.Options{Nodes: 3, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
		cfg.RepairInterval = 0 // the default, 1m
		if change != nil {
			change(cfg)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := c.Node(c.Leader()).Store()
	if err := s.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	var rcpts []string
	for i := range 10 {
		a := fmt.Sprintf("bench%d@example.test", i)
		if _, err := s.AddUser(ctx, replication.NewUser{Address: a, Password: "bench password"}); err != nil {
			b.Fatal(err)
		}
		rcpts = append(rcpts, a)
	}
	return c, rcpts
}

// BenchmarkSMTPEndToEnd drives the MX ports of a 3-node cluster with the
// load generator in its own process: one message per connection, 4 KiB and
// 64 KiB, 1, 8 and 32 concurrent connections spread over the three nodes.
// It reports messages/s and the p50/p99 latency from connect to the 250
// (which means: on W disks and committed). SMTP_BENCH_MESSAGES overrides
// the messages per run (default 150 per connection, at least 300).
func BenchmarkSMTPEndToEnd(b *testing.B) {
	bin := smtpBuildLoad(b)
	for _, size := range []int{4 << 10, 64 << 10} {
		for _, conns := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("size=%dKiB/conns=%d", size>>10, conns), func(b *testing.B) {
				c, rcpts := smtpCluster(b)
				var addrs []string
				for i := range 3 {
					addrs = append(addrs, c.Node(i).Endpoint(node.EndpointSMTP))
				}
				messages := max(300, 150*conns) * b.N
				if v := os.Getenv("SMTP_BENCH_MESSAGES"); v != "" {
					fmt.Sscan(v, &messages)
				}
				b.ResetTimer()
				cmd := exec.Command(bin, "-addrs", strings.Join(addrs, ","), "-rcpt", strings.Join(rcpts, ","),
					"-conns", fmt.Sprint(conns), "-size", fmt.Sprint(size),
					"-messages", fmt.Sprint(messages), "-warmup", fmt.Sprint(max(20, conns*2)))
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				b.StopTimer()
				if err != nil {
					b.Fatalf("smtpload: %v", err)
				}
				var res smtpResult
				if err := json.Unmarshal(out, &res); err != nil {
					b.Fatalf("smtpload output %q: %v", out, err)
				}
				if res.Errors > 0 {
					b.Errorf("%d of %d messages failed; first: %s", res.Errors, res.Errors+res.Messages, res.FirstError)
				}
				b.ReportMetric(res.PerSecond, "msgs/s")
				b.ReportMetric(res.P50ms, "p50_ms")
				b.ReportMetric(res.P99ms, "p99_ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkSMTPStoreBaseline is the same load as BenchmarkSMTPEndToEnd
// without SMTP: Store.Deliver called directly, round-robin on the three
// nodes. The gap between the two is what the SMTP layer costs; this one is
// the ceiling the store sets.
func BenchmarkSMTPStoreBaseline(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		for _, conns := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("size=%dKiB/conns=%d", size>>10, conns), func(b *testing.B) {
				c, rcpts := smtpCluster(b)
				messages := max(300, 150*conns) * b.N
				if v := os.Getenv("SMTP_BENCH_MESSAGES"); v != "" {
					fmt.Sscan(v, &messages)
				}
				body := smtpFiller(size)
				var next atomic.Int64
				lat := make([][]time.Duration, conns)
				var failed atomic.Int64
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= int64(messages) {
								return
							}
							msg := append([]byte(fmt.Sprintf("Message-ID: <%d.%d@bench.test>\r\n", i, time.Now().UnixNano())), body...)
							t0 := time.Now()
							_, err := c.Node(int(i%3)).Store().Deliver(context.Background(), bytes.NewReader(msg),
								[]replication.Recipient{{Account: rcpts[int(i)%len(rcpts)]}}, time.Now(), 0)
							if err != nil {
								failed.Add(1)
								continue
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
				slices.Sort(all)
				if n := failed.Load(); n > 0 {
					b.Errorf("%d deliveries failed", n)
				}
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(smtpPercentile(all, 0.50), "p50_ms")
				b.ReportMetric(smtpPercentile(all, 0.99), "p99_ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func smtpPercentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(float64(len(sorted))*p))].Microseconds()) / 1000
}

// smtpFiller is a plain-text message of about size bytes.
func smtpFiller(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Load <load@remote.test>\r\nTo: bench@example.test\r\nSubject: load test\r\n\r\n")
	for b.Len() < size {
		b.WriteString("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\r\n")
	}
	return b.Bytes()
}
