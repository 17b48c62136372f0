package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// The outbound benchmark: authenticated submissions for outside
// recipients through a 3-node cluster to the harness's sink (the MX of
// every outside domain), beside the same submissions to local mailboxes
// and the same load on the MX port, in the same run on the same machine.

// outAck mirrors smtpload's Ack.
type outAck struct {
	ID string `json:"id"`
	At int64  `json:"at"`
}

// outResult mirrors smtpload's JSON output with -acks.
type outResult struct {
	smtpResult
	Start int64    `json:"start_unix_nano"`
	Acks  []outAck `json:"acks"`
}

const outPassword = "bench password"

// outCluster is smtpCluster's 3-node LAN cluster with the outbound queue
// at its defaults (lease, concurrency, 4 Sends at once per destination),
// DKIM keys for example.test on every node (every message is signed, as
// in production), and the PEM of the certificate the nodes present (what
// smtpload trusts for STARTTLS).
func outCluster(b *testing.B) (c *cluster.Cluster, users []string, caFile string) {
	b.Helper()
	var cert []byte
	c = cluster.New(b, cluster.Options{Nodes: 3, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
		cfg.RepairInterval = 0 // the default, 1m
		if cfg.TLS != nil && len(cfg.TLS.Certificates) > 0 {
			cert = cfg.TLS.Certificates[0].Certificate[0]
		}
	}})
	if cert == nil {
		b.Fatal("the test cluster has no TLS certificate: submission needs STARTTLS")
	}
	caFile = filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := c.Node(c.Leader()).Store()
	if err := s.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		a := fmt.Sprintf("bench%d@example.test", i)
		if _, err := s.AddUser(ctx, replication.NewUser{Address: a, Password: outPassword}); err != nil {
			b.Fatal(err)
		}
		users = append(users, a)
	}
	if _, err := s.EnsureDKIMKeys(ctx); err != nil {
		b.Fatal(err)
	}
	for _, i := range c.Running() {
		n := c.Node(i)
		cluster.WaitFor(b, "DKIM keys on "+n.ID(), cluster.Timeout, func() bool {
			ks, err := n.Store().DKIMSigningKeys(ctx, "example.test")
			return err == nil && len(ks) == 2
		})
	}
	return c, users, caFile
}

// outMessages is the messages per cell: OUTBOUND_BENCH_MESSAGES, or
// 100 per connection between 300 and 2,000 (sized for 2 cores: the three
// cells of one concurrency take well under a minute there).
func outMessages(conns int) int {
	n := min(2000, max(300, 100*conns))
	if v := os.Getenv("OUTBOUND_BENCH_MESSAGES"); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}

// outDomains is how many outside domains the recipients spread over:
// OUTBOUND_BENCH_DOMAINS, default 8 (a mail program writes to many
// domains; 1 shows the per-destination limit, 4 Sends per node).
func outDomains() int {
	n := 8
	if v := os.Getenv("OUTBOUND_BENCH_DOMAINS"); v != "" {
		fmt.Sscan(v, &n)
	}
	return max(1, n)
}

// runLoad runs smtpload with args and returns what it printed.
func runLoad(b *testing.B, bin string, args ...string) outResult {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("smtpload: %v", err)
	}
	var res outResult
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("smtpload output %q: %v", out, err)
	}
	if res.Errors > 0 {
		b.Errorf("%d of %d submissions failed; first: %s", res.Errors, res.Errors+res.Messages, res.FirstError)
	}
	return res
}

// messageID is the Message-ID of raw (without angle brackets), read from
// its header section; "" if it has none.
func messageID(raw []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			return ""
		}
		if len(line) > 11 && strings.EqualFold(line[:11], "message-id:") {
			return strings.Trim(strings.TrimSpace(line[11:]), "<>")
		}
	}
	return ""
}

// sinkWatch matches what the sink received with acknowledged submissions.
type sinkWatch struct {
	c      *cluster.Cluster
	seen   int                  // sink messages already read
	got    map[string]time.Time // Message-ID → first Received
	dups   int
	dupIDs []string
}

func newSinkWatch(c *cluster.Cluster) *sinkWatch {
	return &sinkWatch{c: c, seen: len(c.Sink().Messages()), got: map[string]time.Time{}}
}

// wait polls the sink until every acked message is there (or the
// deadline: a benchmark must not hang) and returns how many are missing.
func (w *sinkWatch) wait(acks []outAck, deadline time.Duration) (missing int) {
	end := time.Now().Add(deadline)
	for {
		msgs := w.c.Sink().Messages()
		for _, m := range msgs[w.seen:] {
			id := messageID(m.Data)
			if _, ok := w.got[id]; ok {
				w.dups++
				w.dupIDs = append(w.dupIDs, id)
				continue
			}
			w.got[id] = m.Received
		}
		w.seen = len(msgs)
		missing = 0
		for _, a := range acks {
			if _, ok := w.got[a.ID]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(end) {
			return missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkOutbound submits 4 KiB messages as a mail program does (port
// 587, STARTTLS, AUTH PLAIN, one connection per message, smtpload in its
// own process) at 1, 8 and 32 concurrent connections spread over a 3-node
// cluster, three ways, each concurrency on a fresh cluster:
//
//   - path=mx-local: the MX port (no TLS, no AUTH) to local mailboxes, as
//     BenchmarkSMTPEndToEnd does;
//   - path=submission-local: submission to local mailboxes;
//   - path=submission-outside: submission to outside recipients, which
//     the nodes' queue workers claim, DKIM-sign (Ed25519 and RSA) and send
//     to the harness's sink.
//
// msgs/s runs from the first connect until the last message is where it
// goes: for a local mailbox that is its 250 (the 250 means committed),
// for the outside the sink's acceptance of the last one. submit_p50/p99_ms
// is connect to 250; out_p50/p99_ms is the submission's 250 to the sink's
// Received (matched by Message-ID). dups counts messages the sink got
// more than once (warmup included); raft_entries/msg is the Raft log
// entries per counted message; cpu_ms/msg is the CPU of this process (the
// nodes, and for the outside the sink too; not smtpload) per counted
// message.
//
// Each submitting connection comes from its own loopback address
// (smtpload -sources), as separate mail programs would: from one address,
// ten logins in progress at once on a node count as ten failures and
// block it (protocol/auth). OUTBOUND_BENCH_MESSAGES and
// OUTBOUND_BENCH_DOMAINS change the load.
func BenchmarkOutbound(b *testing.B) {
	bin := smtpBuildLoad(b)
	const size = 4 << 10
	domains := outDomains()
	for _, conns := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c, users, caFile := outCluster(b)
			var mx, sub []string
			for i := range 3 {
				mx = append(mx, c.Node(i).Endpoint(node.EndpointSMTP))
				sub = append(sub, c.Node(i).Endpoint(node.EndpointSubmission))
			}
			var outside []string
			for i := range max(10, domains) {
				outside = append(outside, fmt.Sprintf("rcpt%d@dest%d.test", i, i%domains))
			}
			messages := outMessages(conns)
			warmup := max(20, conns*2)
			common := []string{"-conns", fmt.Sprint(conns), "-size", fmt.Sprint(size)}
			submit := append([]string{"-addrs", strings.Join(sub, ","), "-users", strings.Join(users, ","),
				"-password", outPassword, "-ca", caFile, "-sources"}, common...)

			b.Run("path=mx-local", func(b *testing.B) {
				args := append([]string{"-addrs", strings.Join(mx, ","), "-rcpt", strings.Join(users, ",")}, common...)
				runLoad(b, bin, append(args, "-messages", fmt.Sprint(warmup))...)
				b.ResetTimer()
				idx, cpu := raftIndex(c), cpuTime()
				res := runLoad(b, bin, append(args, "-messages", fmt.Sprint(messages))...)
				b.StopTimer()
				reportLocal(b, res)
				reportCost(b, c, res, idx, cpu)
			})
			b.Run("path=submission-local", func(b *testing.B) {
				args := append(slices.Clone(submit), "-rcpt", strings.Join(users, ","))
				runLoad(b, bin, append(args, "-messages", fmt.Sprint(warmup))...)
				b.ResetTimer()
				idx, cpu := raftIndex(c), cpuTime()
				res := runLoad(b, bin, append(args, "-messages", fmt.Sprint(messages))...)
				b.StopTimer()
				reportLocal(b, res)
				reportCost(b, c, res, idx, cpu)
			})
			b.Run("path=submission-outside", func(b *testing.B) {
				args := append(slices.Clone(submit), "-rcpt", strings.Join(outside, ","), "-acks")
				w := newSinkWatch(c)
				// The warmup also opens the workers' connections to the sink.
				warm := runLoad(b, bin, append(args, "-messages", fmt.Sprint(warmup))...)
				if n := w.wait(warm.Acks, 2*time.Minute); n > 0 {
					b.Fatalf("%d warmup messages never reached the sink", n)
				}
				b.ResetTimer()
				idx, cpu := raftIndex(c), cpuTime()
				res := runLoad(b, bin, append(args, "-messages", fmt.Sprint(messages))...)
				missing := w.wait(res.Acks, 3*time.Minute)
				b.StopTimer()
				reportCost(b, c, res, idx, cpu)
				if missing > 0 {
					st, _ := c.Node(c.Leader()).Store().QueueStats(context.Background())
					b.Errorf("%d of %d acknowledged messages did not reach the sink in 3 minutes (queue: %+v)", missing, len(res.Acks), st)
				}
				w.logDups(b)
				var lat []time.Duration
				var last time.Time
				for _, a := range res.Acks {
					if at, ok := w.got[a.ID]; ok {
						lat = append(lat, at.Sub(time.Unix(0, a.At)))
						if at.After(last) {
							last = at
						}
					}
				}
				slices.Sort(lat)
				if len(lat) > 0 {
					b.ReportMetric(float64(len(lat))/last.Sub(time.Unix(0, res.Start)).Seconds(), "msgs/s")
				}
				b.ReportMetric(res.P50ms, "submit_p50_ms")
				b.ReportMetric(res.P99ms, "submit_p99_ms")
				b.ReportMetric(smtpPercentile(lat, 0.50), "out_p50_ms")
				b.ReportMetric(smtpPercentile(lat, 0.99), "out_p99_ms")
				b.ReportMetric(float64(w.dups), "dups")
				b.ReportMetric(0, "ns/op")
			})
		})
	}
}

// raftIndex is the leader's last Raft log index: its growth over a run
// is the log entries the run cost (queue clock ticks included).
func raftIndex(c *cluster.Cluster) uint64 {
	return c.Node(c.Leader()).Consensus().Status().LastIndex
}

// cpuTime is the CPU this process (the three nodes, the sink and the
// DNS; not smtpload) has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCost reports the Raft log entries and the CPU per counted
// message since idx and cpu were read.
func reportCost(b *testing.B, c *cluster.Cluster, res outResult, idx uint64, cpu time.Duration) {
	n := float64(max(1, res.Messages))
	b.ReportMetric(float64(raftIndex(c)-idx)/n, "raft_entries/msg")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/n, "cpu_ms/msg")
}

// reportLocal reports a run to local mailboxes: every 250 means stored,
// so the last 250 is when the mailboxes hold them all.
func reportLocal(b *testing.B, res outResult) {
	b.ReportMetric(res.PerSecond, "msgs/s")
	b.ReportMetric(res.P50ms, "submit_p50_ms")
	b.ReportMetric(res.P99ms, "submit_p99_ms")
	b.ReportMetric(0, "ns/op")
}

// logDups says which messages the sink got more than once, and from where.
func (w *sinkWatch) logDups(b *testing.B) {
	if len(w.dupIDs) == 0 {
		return
	}
	for _, m := range w.c.Sink().Messages() {
		if id := messageID(m.Data); slices.Contains(w.dupIDs, id) {
			b.Logf("sink got %q again: #%d from %s at %s, to %v", id, m.N, m.RemoteAddr, m.Received.Format("15:04:05.000"), m.To)
		}
	}
}
