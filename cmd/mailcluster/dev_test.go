package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/web"
)

// syncBuffer is a bytes.Buffer the child's output goroutine and the test
// can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// buildBinary compiles mailcluster once for the end-to-end tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mailcluster")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// devBasePort picks a free block of ports for `mailcluster dev` below the
// kernel's ephemeral range. Ports picked inside it (--base-port 0) can be
// taken, between the pick and the nodes' bind, by the source port of any
// other test's outgoing connection; nothing takes ports below it unasked.
// The block lies under 20000, where test/cluster's harness picks its own.
func devBasePort(t *testing.T, nodes int) int {
	t.Helper()
	const first, limit = 11000, 20000 // above make run's default block
	block := devPortBlock * nodes
	for range 50 {
		base := first + rand.IntN((limit-first-block)/devPortBlock)*devPortBlock
		free := true
		for p := base; p < base+block && free; p++ {
			free = portFree(p, true) == nil
		}
		if free {
			return base
		}
	}
	t.Fatal("no free block of ports between 11000 and 20000")
	return 0
}

func statusOf(t *testing.T, bin, dir string) (web.ClusterStatus, error) {
	out, err := exec.Command(bin, "status", "--dev", dir, "--json").Output()
	if err != nil {
		return web.ClusterStatus{}, err
	}
	var st web.ClusterStatus
	err = json.Unmarshal(out, &st)
	return st, err
}

// TestDevClusterSurvivesKillNine runs the real binary the way a user does:
// `mailcluster dev`, then status, then kill -9 the leader's process.
func TestDevClusterSurvivesKillNine(t *testing.T) {
	start := time.Now()
	bin := buildBinary(t)
	t.Logf("built in %v", time.Since(start))
	dir := filepath.Join(t.TempDir(), "dev")
	var out syncBuffer
	base := devBasePort(t, 3)
	dev := exec.Command(bin, "dev", "--dir", dir, "--base-port", strconv.Itoa(base), "--log-level", "warn")
	dev.Stdout, dev.Stderr = &out, &out
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = dev.Wait(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mailcluster dev printed:\n%s", out.String())
			logs, _ := filepath.Glob(filepath.Join(dir, "*", "node.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("%s, last lines:\n%s", l, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
		_ = dev.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = dev.Process.Kill()
		}
	})

	var info clusterInfo
	waitUntil(t, "cluster.json with the demo account", 90*time.Second, func() bool {
		var err error
		info, err = readClusterInfo(dir)
		return err == nil && info.DemoUser != ""
	})
	t.Logf("cluster up after %v", time.Since(start))
	if len(info.Nodes) != 3 || info.DemoPassword == "" || info.TLSCert == "" {
		t.Fatalf("cluster.json: %+v", info)
	}
	for _, n := range info.Nodes {
		if n.PID == 0 || n.HTTP == "" || n.SMTP == "" || n.IMAP == "" || n.POP3 == "" {
			t.Fatalf("node entry incomplete: %+v", n)
		}
	}
	st, err := statusOf(t, bin, dir)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	if st.Leader == "" || len(st.Members) != 3 {
		t.Fatalf("status: %+v", st)
	}

	// kill -9 the leader's process; the other two elect a new one.
	var leaderPID int
	for _, n := range info.Nodes {
		if n.ID == st.Leader {
			leaderPID = n.PID
		}
	}
	if err := syscall.Kill(leaderPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a new leader", 30*time.Second, func() bool {
		s, err := statusOf(t, bin, dir)
		return err == nil && s.Leader != "" && s.Leader != st.Leader
	})
	t.Logf("new leader after %v", time.Since(start))
	// Writes work on the survivors: add a user through the CLI.
	cmd := exec.Command(bin, "user", "add", "bob@"+info.Domain, "--password", "bob's password", "--dev", dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user add after the kill: %v\n%s", err, b)
	}
	b, err := exec.Command(bin, "user", "list", "--dev", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(b), "bob@"+info.Domain) || !strings.Contains(string(b), info.DemoUser) {
		t.Fatalf("user list: %v\n%s", err, b)
	}
	aliasAddr := "info@" + info.Domain
	if b, err := exec.Command(bin, "alias", "add", aliasAddr, "bob@"+info.Domain, "--dev", dir).CombinedOutput(); err != nil {
		t.Fatalf("alias add: %v\n%s", err, b)
	}
	b, err = exec.Command(bin, "alias", "list", "--dev", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(b), aliasAddr) {
		t.Fatalf("alias list: %v\n%s", err, b)
	}
	waitUntil(t, "dev to report the dead node", 10*time.Second, func() bool {
		return strings.Contains(out.String(), "stopped: signal: killed")
	})

	t.Logf("checks done after %v", time.Since(start))
	// Ctrl-C stops everything cleanly.
	_ = dev.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("dev exited with %v\n%s", waitErr, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("dev did not stop after SIGINT")
	}
	for _, n := range info.Nodes {
		if processAlive(n.PID) {
			t.Fatalf("%s (pid %d) still runs after dev stopped", n.ID, n.PID)
		}
	}
	if !strings.Contains(out.String(), "stopped; the data stays") {
		t.Fatalf("dev output: %s", out.String())
	}
}
