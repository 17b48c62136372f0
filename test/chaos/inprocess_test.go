package chaos_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/test/chaos"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const adminToken = "chaos-in-process-admin-token"

// inProcess is the three-node harness of test/cluster as a chaos Target:
// "kill" is an abrupt shutdown in the same process, a partition is cut in
// each node's network layer, and a node cannot be frozen.
type inProcess struct {
	c                      *cluster.Cluster
	smtp, subs, imaps, web []string // pinned: the harness restarts nodes on their old ports
}

func newInProcess(t *testing.T) *inProcess {
	c := cluster.New(t, cluster.Options{Nodes: 3, Configure: func(_ int, cfg *node.Config) {
		cfg.AdminToken = adminToken
		// Short waits, so mail deferred by a fault leaves soon after it
		// heals, and a dead sender's lease runs out quickly.
		cfg.OutboundRetry = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second}
		cfg.OutboundLease = 5 * time.Second
	}})
	p := &inProcess{c: c}
	for i := range 3 {
		n := c.Node(i)
		p.smtp = append(p.smtp, n.Endpoint(node.EndpointSMTP))
		p.subs = append(p.subs, n.Endpoint(node.EndpointSubmissions))
		p.imaps = append(p.imaps, n.Endpoint(node.EndpointIMAPS))
		p.web = append(p.web, n.HTTPAddr())
	}
	return p
}

func (p *inProcess) Name() string                 { return "in-process cluster (test/cluster)" }
func (p *inProcess) Nodes() int                   { return len(p.smtp) }
func (p *inProcess) SMTPAddr(i int) string        { return p.smtp[i] }
func (p *inProcess) SubmissionsAddr(i int) string { return p.subs[i] }
func (p *inProcess) IMAPSAddr(i int) string       { return p.imaps[i] }
func (p *inProcess) HTTPAddr(i int) string        { return p.web[i] }
func (p *inProcess) AdminToken() string           { return adminToken }
func (p *inProcess) ClientTLS() *tls.Config       { return p.c.ClientTLS() }
func (p *inProcess) Supports(f chaos.Fault) bool  { return f != chaos.FreezeLeader }

func (p *inProcess) Kill(_ context.Context, i int) error  { p.c.Kill(i); return nil }
func (p *inProcess) Start(_ context.Context, i int) error { p.c.Restart(i); return nil }
func (p *inProcess) Restart(_ context.Context, i int) error {
	p.c.Kill(i)
	p.c.Restart(i)
	return nil
}
func (p *inProcess) Wipe(_ context.Context, i int) error { p.c.Wipe(i); return nil }
func (p *inProcess) Freeze(context.Context, int) error   { return os.ErrInvalid }
func (p *inProcess) Thaw(context.Context, int) error     { return os.ErrInvalid }

func (p *inProcess) Isolate(_ context.Context, i int) error {
	var others []int
	for j := range p.Nodes() {
		if j != i {
			others = append(others, j)
		}
	}
	p.c.Partition([]int{i}, others)
	return nil
}

// Debug writes every goroutine's stack to a file when CHAOS_DEBUG_DIR is set.
func (p *inProcess) Debug(reason string) string {
	dir := os.Getenv("CHAOS_DEBUG_DIR")
	if dir == "" {
		return "set CHAOS_DEBUG_DIR to capture goroutine stacks"
	}
	path := filepath.Join(dir, fmt.Sprintf("goroutines-%d.txt", time.Now().UnixNano()))
	f, err := os.Create(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n\n", reason)
	_ = pprof.Lookup("goroutine").WriteTo(f, 2)
	return "goroutine stacks in " + path
}

func (p *inProcess) Rejoin(context.Context, int) error { p.c.Heal(); return nil }

// Arrivals reads the harness's sink, the MX of every outside domain.
func (p *inProcess) Arrivals(context.Context) (chaos.Arrivals, error) {
	var out chaos.Arrivals
	for _, m := range p.c.Sink().Messages() {
		out.Messages = append(out.Messages, chaos.Arrival{N: m.N, To: m.To, Received: m.Received, Data: m.Data})
	}
	out.Overlapped = p.c.Sink().Overlapped()
	return out, nil
}

func (p *inProcess) Holds(_ context.Context, i int, ids []blob.ID) ([]bool, error) {
	store := p.c.Node(i).BlobStore()
	out := make([]bool, len(ids))
	for k, id := range ids {
		out[k] = store.Has(id)
	}
	return out, nil
}

// TestLedgerUnderFaultsInProcess runs the chaos ledger checker against three
// real nodes in this process: kill the leader, kill a follower, cut the
// leader off, lose a disk, restart everything in turn — while SMTP senders
// and IMAP workers keep going — and fails on any acknowledged message lost,
// duplicated or altered, any broken UID promise, or any write the cut-off
// side acknowledged. A quarter of the messages go to outside recipients
// through submission; every acknowledged one must reach the harness's sink
// once the outbound queue drained (duplicates near a fault are counted).
func TestLedgerUnderFaultsInProcess(t *testing.T) {
	p := newInProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, p, chaos.Options{
		Schedule: []chaos.Fault{chaos.KillLeader, chaos.KillFollower, chaos.PartitionLeader, chaos.WipeNode, chaos.RollingRestart},
		// A modest share to the outside: each is a login (an argon2id hash).
		Load:          chaos.Load{Users: 2, Senders: 2, Rate: 25, Outside: 0.25},
		OutsideDrain:  time.Minute,
		Hold:          time.Second,
		Warmup:        500 * time.Millisecond,
		PartitionHold: 4 * time.Second, // the harness's propose timeout is 3 s
		HealTimeout:   cluster.Timeout,
		RepairTimeout: cluster.Timeout,
		ProbeTimeout:  cluster.Timeout,
		Logf:          t.Logf,
	})
	if rep != nil {
		var b writer
		rep.WriteTable(&b)
		t.Log("\n" + string(b))
		if dir := os.Getenv("CHAOS_REPORT_DIR"); dir != "" {
			if werr := rep.WriteFiles(filepath.Join(dir, "chaos-inprocess.txt")); werr != nil {
				t.Error(werr)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed {
		t.Fatalf("%d violations (see the table above)", len(rep.Problems))
	}
	if rep.Totals.Acked == 0 {
		t.Fatal("no message was acknowledged: the workload never ran")
	}
}

type writer []byte

func (w *writer) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }
