package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// storeCluster is a LAN-timed cluster with one domain and the given users.
func storeCluster(b *testing.B, nodes int, users ...string) *cluster.Cluster {
	b.Helper()
	c := cluster.New(b, cluster.Options{Nodes: nodes, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.ProposeTimeout = 10 * time.Second
	}})
	s := c.Node(c.Leader()).Store()
	ctx := context.Background()
	if err := s.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	for _, u := range users {
		if _, err := s.AddUser(ctx, replication.NewUser{Address: u + "@example.test", Password: "benchmark password"}); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// words is a small vocabulary for text that compresses like real prose.
var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there been one all we their has would when if so no more out up what about
who them some into time only could new very than other after first also made how may over such these
meeting report project budget review please find attached regards thanks schedule update customer
order invoice delivery team week next monday friday question answer draft final version change`)

// textMail returns a realistic plain-text message of about size bytes.
func textMail(r *rand.Rand, i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <sender%d@remote.test>\r\n", i%97)
	for hop := range 3 {
		fmt.Fprintf(&b, "Received: from mx%d.remote.test (mx%d.remote.test [192.0.2.%d])\r\n\tby mail.example.test with ESMTPS id %x\r\n\tfor <user@example.test>; Thu, 26 Nov 2026 10:%02d:%02d +0000\r\n", hop, hop, r.IntN(250), r.Uint64(), r.IntN(60), r.IntN(60))
	}
	sig := make([]byte, 256)
	for j := range sig {
		sig[j] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[r.IntN(64)]
	}
	fmt.Fprintf(&b, "DKIM-Signature: v=1; a=rsa-sha256; d=remote.test; s=sel; bh=%s;\r\n\tb=%s\r\n", sig[:44], sig)
	fmt.Fprintf(&b, "From: Sender %d <sender%d@remote.test>\r\nTo: user@example.test\r\nSubject: %s %s %d\r\n", i%97, i%97, words[r.IntN(len(words))], words[r.IntN(len(words))], i)
	fmt.Fprintf(&b, "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%x@remote.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", r.Uint64())
	col := 0
	for b.Len() < size {
		w := words[r.IntN(len(words))]
		if col+len(w) > 72 {
			b.WriteString("\r\n")
			col = 0
		}
		b.WriteString(w + " ")
		col += len(w) + 1
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// BenchmarkDeliver measures deliveries through the store API (body on W
// replicas + one Raft commit, fsync on) on 3 in-process nodes: throughput
// and acknowledgment latency, 4 KiB and 64 KiB, 1 and 32 concurrent.
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		for _, workers := range []int{1, 32} {
			b.Run(fmt.Sprintf("size=%dKiB/concurrent=%d", size>>10, workers), func(b *testing.B) {
				c := storeCluster(b, 3, "alice")
				per := max(1, b.N*100/workers)
				if workers == 1 {
					per = max(1, b.N*200)
				}
				lat := make([][]time.Duration, workers)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(w), 1))
						s := c.Node(w % 3).Store()
						for i := range per {
							body := textMail(r, w*per+i, size)
							t0 := time.Now()
							_, err := s.Deliver(context.Background(), bytes.NewReader(body),
								[]replication.Recipient{{Account: "alice@example.test"}}, time.Now(), 0)
							if err != nil {
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
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "deliveries/s")
				b.ReportMetric(float64(percentile(all, 0.5).Microseconds())/1000, "p50_ms")
				b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99_ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// dirBytes is the space the files under dir take on disk.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkStorageRatio delivers a generated text-mail corpus and reports
// body bytes on disk per replica over raw bytes (zstd at rest).
func BenchmarkStorageRatio(b *testing.B) {
	c := storeCluster(b, 3, "alice")
	r := rand.New(rand.NewPCG(7, 7))
	var raw int64
	s := c.Node(0).Store()
	const messages = 300
	for i := range messages {
		body := textMail(r, i, 2<<10+r.IntN(30<<10))
		raw += int64(len(body))
		if _, err := s.Deliver(context.Background(), bytes.NewReader(body), []replication.Recipient{{Account: "alice@example.test"}}, time.Now(), 0); err != nil {
			b.Fatal(err)
		}
	}
	var onDisk int64
	for _, i := range c.Running() {
		n := c.Node(i)
		cluster.WaitFor(b, "every body on every replica", 30*time.Second, func() bool {
			held := 0
			_ = n.BlobStore().Walk(context.Background(), func(blob.ID, time.Time) error { held++; return nil })
			return held == messages
		})
		onDisk += dirBytes(n.BlobStore().Dir())
	}
	perReplica := float64(onDisk) / float64(len(c.Running()))
	b.ReportMetric(perReplica/float64(raw), "disk/raw_per_replica")
	b.ReportMetric(float64(raw)/(1<<20), "raw_MiB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkOpenMailbox100k fills one mailbox with 100,000 messages through
// Raft on a single node, then times Store.OpenMailbox (read barrier, status
// and every UID) — what SELECT and POP3 login do.
func BenchmarkOpenMailbox100k(b *testing.B) {
	c := cluster.New(b, cluster.Options{Nodes: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.Profile = node.LANProfile()
		cfg.Replicas = 1
	}})
	n := c.Node(0)
	s := n.Store()
	ctx := context.Background()
	if err := s.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	if _, err := s.AddUser(ctx, replication.NewUser{Address: "big@example.test", Password: "benchmark password"}); err != nil {
		b.Fatal(err)
	}
	const total, workers = 100_000, 64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				var id state.BlobID
				copy(id[:], fmt.Sprintf("%032d", i))
				cmd, _ := state.Encode(state.Deliver{Time: time.Now().UnixNano(), Blob: id, Size: 4096,
					Targets: []state.DeliverTarget{{Account: "big@example.test"}}})
				if _, err := n.Consensus().Propose(ctx, cmd); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	fill := time.Since(start)
	b.ResetTimer()
	var opened replication.OpenedMailbox
	for range b.N {
		var err error
		if opened, err = s.OpenMailbox(ctx, "big@example.test", "INBOX"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(opened.UIDs) != total {
		b.Fatalf("opened %d messages, want %d", len(opened.UIDs), total)
	}
	b.ReportMetric(float64(total)/fill.Seconds(), "fill_msgs/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "open_ms")
}

// BenchmarkMetadataMemory reports a process's resident memory with 100,000
// and 500,000 stored messages. It measures in a fresh child process (this
// test binary, re-run with MAILCLUSTER_SCALE_CHILD set) so nothing else in
// the benchmark run inflates the figures.
func BenchmarkMetadataMemory(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMetadataScaleChild$", "-test.v")
	cmd.Env = append(os.Environ(), "MAILCLUSTER_SCALE_CHILD="+b.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "SCALE ")
		if !ok {
			continue
		}
		var m struct {
			Messages                       int
			RSSMiB, AnonMiB, FileMiB, Heap float64
			OpenMS                         float64
		}
		if err := json.Unmarshal([]byte(rest), &m); err != nil {
			b.Fatal(err)
		}
		k := strconv.Itoa(m.Messages/1000) + "k"
		b.ReportMetric(m.RSSMiB, "rss_MiB@"+k)
		b.ReportMetric(m.AnonMiB, "rss_anon_MiB@"+k)
		b.ReportMetric(m.FileMiB, "rss_file_MiB@"+k)
		b.ReportMetric(m.Heap, "heap_MiB@"+k)
		b.ReportMetric(m.OpenMS, "open_ms@"+k)
	}
	b.ReportMetric(0, "ns/op")
}

// TestMetadataScaleChild is BenchmarkMetadataMemory's measuring process,
// not a test: it does nothing unless started by that benchmark.
func TestMetadataScaleChild(t *testing.T) {
	dir := os.Getenv("MAILCLUSTER_SCALE_CHILD")
	if dir == "" {
		return
	}
	fsm, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fsm.Close()
	apply := func(idx *uint64, cmds ...state.Command) {
		var entries []consensus.Entry
		for _, c := range cmds {
			data, err := state.Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			*idx++
			entries = append(entries, consensus.Entry{Index: *idx, Term: 1, Data: data})
		}
		if _, err := fsm.Apply(entries); err != nil {
			t.Fatal(err)
		}
	}
	var idx uint64
	now := time.Now().UnixNano()
	apply(&idx, state.AddDomain{Time: now, Name: "example.test"})
	apply(&idx, state.AddAccount{Time: now, Address: "big@example.test", PasswordHash: "x"})
	stored := 0
	for _, target := range []int{100_000, 500_000} {
		for stored < target {
			batch := make([]state.Command, 0, 256)
			for range 256 {
				var id state.BlobID
				copy(id[:], fmt.Sprintf("%032d", stored))
				batch = append(batch, state.Deliver{Time: now, Blob: id, Size: 4096, Summary: make([]byte, 300),
					Targets: []state.DeliverTarget{{Account: "big@example.test"}}})
				stored++
			}
			apply(&idx, batch...)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t0 := time.Now()
		_ = fsm.View(func(tx *state.Tx) error {
			mb, err := tx.Mailbox("big@example.test", "INBOX")
			if err != nil {
				return err
			}
			_, err = tx.UIDs(mb.ID)
			return err
		})
		open := time.Since(t0)
		anon, file := rssSplitMiB()
		fmt.Printf("SCALE {\"Messages\":%d,\"RSSMiB\":%.1f,\"AnonMiB\":%.1f,\"FileMiB\":%.1f,\"Heap\":%.1f,\"OpenMS\":%.2f}\n",
			stored, anon+file, anon, file, float64(ms.HeapInuse)/(1<<20), float64(open.Microseconds())/1000)
	}
}

// rssSplitMiB reads this process's resident memory from /proc, split into
// anonymous memory (heap, stacks: what the process really holds) and
// file-backed pages (bbolt's memory-mapped file: page cache the kernel
// can drop under pressure).
func rssSplitMiB() (anon, file float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:", "RssShmem:":
			file += kb / 1024
		}
	}
	return anon, file
}
