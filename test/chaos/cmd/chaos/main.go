// Command chaos runs the fault-injection suite against the docker-compose
// deployment: it builds the image, starts three containers, sends mail and
// works on mailboxes while it kills, freezes, cuts off and wipes nodes, and
// checks after every fault that no acknowledged message was lost,
// duplicated or altered. A share of the mail goes through submission to
// outside recipients, whose MX is a fourth container (mailcluster outside):
// every acknowledged one must reach it once the queue has drained. It
// prints a table, writes it (and a JSON report) to -report, and exits 1 if
// any promise was broken.
//
//	go run ./test/chaos/cmd/chaos                      # short: every fault once (make chaos)
//	go run ./test/chaos/cmd/chaos -duration 30m        # long: faults in shuffled rounds (make chaos-long)
//
// It needs the static binary in bin/mailcluster (make build), docker and
// docker-compose. Ports are published on 127.0.0.1 only (prefix 1: node1
// SMTP on 11025, below the ephemeral port range).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/test/chaos"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		duration   = flag.Duration("duration", 0, "keep injecting faults in shuffled rounds for this long (0: every fault once)")
		report     = flag.String("report", "chaos-report.txt", "write the table here, and the full report as JSON beside it")
		work       = flag.String("work", "", "folder for the generated secret, TLS files and container logs (default: a new temporary folder)")
		build      = flag.Bool("build", true, "build the image first (docker-compose build); needs bin/mailcluster")
		keep       = flag.Bool("keep", false, "leave the containers running at the end, for a look")
		seed       = flag.Uint64("seed", 0, "random seed (0: from the clock); printed at the start")
		rate       = flag.Float64("rate", 15, "messages per second, all senders together")
		outside    = flag.Float64("outside", 0.2, "share of new messages (0 to 1) sent through submission to recipients outside the cluster, which the outside container's sink receives; 0: none, and no outside container")
		drain      = flag.Duration("outside-drain", 2*time.Minute, "how long the outbound queue may take to empty after the senders stopped")
		hold       = flag.Duration("hold", 6*time.Second, "how long each fault lasts at least")
		target     = flag.Duration("unavailability-target", 3*time.Second, "fail if writes stay unavailable longer than this (p50) after a leader kill; 0: do not check")
		prefix     = flag.Int("port-prefix", 1, "first digit of the published ports (node1 SMTP on 127.0.0.1:<p>1025, the outside listing on <p>0080)")
		clusterNet = flag.String("cluster-net", "10.229.77", "first three octets of the cluster network's /24")
		clientNet  = flag.String("client-net", "10.229.78", "first three octets of the client network's /24")
	)
	env := map[string]string{}
	flag.Func("env", "extra node setting for every container, KEY=VALUE (repeatable), e.g. MAILCLUSTER_LOG_LEVEL=debug", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || !strings.HasPrefix(k, "MAILCLUSTER_") {
			return fmt.Errorf("want MAILCLUSTER_KEY=value, got %q", v)
		}
		env[k] = val
		return nil
	})
	flag.Parse()

	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: %s not found: the suite needs a Docker engine and docker-compose\n", tool)
			return 2
		}
	}
	if *build {
		if _, err := os.Stat(filepath.Join(root, "bin", "mailcluster")); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: bin/mailcluster is missing: run `make build` first (the image is FROM scratch around it)")
			return 2
		}
	}
	if *work == "" {
		if *work, err = os.MkdirTemp("", "mailcluster-chaos-"); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
	}
	logf := func(format string, args ...any) {
		fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := &chaos.Compose{Dir: root, Work: *work, Build: *build, Env: env, Outside: *outside > 0, PortPrefix: *prefix, ClusterNet: *clusterNet, ClientNet: *clientNet, Logf: logf}
	logf("starting the compose cluster (work folder %s)", *work)
	if err := d.Up(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		_ = d.Down(context.Background(), *keep)
		return 2
	}
	opts := chaos.Options{
		Schedule:             chaos.AllFaults,
		Duration:             *duration,
		Load:                 chaos.Load{Rate: *rate, Outside: *outside},
		OutsideDrain:         *drain,
		Hold:                 *hold,
		Warmup:               5 * time.Second,
		UnavailabilityTarget: *target,
		Seed:                 *seed,
		Logf:                 logf,
	}
	// A generous bound: the long run plus time for its checks.
	rctx, cancel := context.WithTimeout(ctx, *duration+45*time.Minute)
	defer cancel()
	rep, runErr := chaos.Run(rctx, d, opts)
	if derr := d.Down(context.Background(), *keep); derr != nil {
		logf("tearing down: %v", derr)
	}
	logf("container logs: %s", filepath.Join(*work, "compose.log"))
	if rep != nil {
		fmt.Println()
		rep.WriteTable(os.Stdout)
		if err := rep.WriteFiles(*report); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: write report:", err)
		} else {
			logf("report written to %s (and .json)", *report)
		}
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "chaos: the run could not be completed:", runErr)
		return 1
	}
	if !rep.Passed {
		return 1
	}
	return 0
}

// repoRoot walks up from the working folder to the one holding go.mod and
// docker-compose.yml.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		_, e1 := os.Stat(filepath.Join(dir, "go.mod"))
		_, e2 := os.Stat(filepath.Join(dir, "docker-compose.yml"))
		if e1 == nil && e2 == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the repository: no folder above holds go.mod and docker-compose.yml")
		}
		dir = parent
	}
}
