package bench

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
	pop3client "github.com/mailcluster/mailcluster/test/pop3"
)

const pop3BenchPassword = "bench password, not secret"

// pop3Message is an SMTP-shaped message of about size octets.
func pop3Message(i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <sender@remote.bench>\r\nTo: <reader@pop3.bench>\r\nSubject: bench %d\r\n"+
		"Message-ID: <%d.%d@remote.bench>\r\n\r\n", i, i, time.Now().UnixNano())
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for b.Len() < size {
		if b.Len()%1000 < len(line) {
			b.WriteString(".dot-stuffed line\r\n")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// pop3Fill creates an account and delivers count messages of size octets
// through all nodes, eight at a time.
func pop3Fill(b *testing.B, c *cluster.Cluster, user string, count, size int) {
	ctx := context.Background()
	s := c.Node(c.Leader()).Store()
	if _, err := s.AddUser(ctx, replication.NewUser{Address: user, Password: pop3BenchPassword}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := c.Node(i%3).Store().Deliver(ctx, bytes.NewReader(pop3Message(i, size)),
				[]replication.Recipient{{Account: user}}, time.Now(), 0)
			if err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkPOP3Retr measures how fast POP3 sessions download a maildrop:
// each worker logs in on its own node (round-robin over the 3) and RETRs
// every message, three passes. It reports wire octets/s, messages/s, the
// RETR latency, and the slowest first LIST of a session: the first LIST of
// a maildrop on a node reads every body once to learn its exact size.
func BenchmarkPOP3Retr(b *testing.B) {
	c := cluster.New(b, cluster.Options{Nodes: 3, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
	}})
	if err := c.Node(c.Leader()).Store().AddDomain(context.Background(), "pop3.bench"); err != nil {
		b.Fatal(err)
	}
	for _, shape := range []struct {
		name        string
		count, size int
	}{{"4KiB", 800, 4 << 10}, {"64KiB", 128, 64 << 10}, {"1MiB", 12, 1 << 20}} {
		user := fmt.Sprintf("reader-%s@pop3.bench", strings.ToLower(shape.name))
		pop3Fill(b, c, user, shape.count, shape.size)
		for _, workers := range []int{1, 4} {
			b.Run(fmt.Sprintf("size=%s/sessions=%d", shape.name, workers), func(b *testing.B) {
				pop3RetrRun(b, c, user, workers)
			})
		}
	}
}

func pop3RetrRun(b *testing.B, c *cluster.Cluster, user string, workers int) {
	const passes = 3
	ctx := context.Background()
	type result struct {
		octets, msgs int64
		lat          []time.Duration
		firstList    time.Duration
	}
	results := make([]result, workers)
	clients := make([]*pop3client.Client, workers)
	for w := range workers {
		cl, err := pop3client.Dial(ctx, c.Node(w%3).Endpoint(node.EndpointPOP3), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Login(user, pop3BenchPassword); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := cl.List(); err != nil {
			b.Fatal(err)
		}
		results[w].firstList = time.Since(t0)
		clients[w] = cl
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, r := clients[w], &results[w]
			for range b.N * passes {
				count, _, err := cl.Stat()
				if err != nil {
					b.Error(err)
					return
				}
				for n := 1; n <= count; n++ {
					t0 := time.Now()
					body, _, err := cl.Retr(n)
					if err != nil {
						b.Error(err)
						return
					}
					r.lat = append(r.lat, time.Since(t0))
					r.octets += int64(len(body))
					r.msgs++
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, cl := range clients {
		_, _ = cl.Quit()
	}
	var octets, msgs int64
	var lat []time.Duration
	var firstList time.Duration
	for _, r := range results {
		octets += r.octets
		msgs += r.msgs
		lat = append(lat, r.lat...)
		firstList = max(firstList, r.firstList)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(octets)/elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "retr_p50_ms")
	b.ReportMetric(pct(0.99), "retr_p99_ms")
	b.ReportMetric(float64(firstList.Microseconds())/1000, "first_list_ms")
	b.ReportMetric(0, "ns/op")
}
