package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/dnsclient"
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
	const first, limit = 11000, 20000   // above make run's default block
	block := devPortBlock * (nodes + 1) // the nodes' blocks, then the outside world's
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

func statusOf(t *testing.T, bin, dir string) (api.ClusterStatus, error) {
	out, err := exec.Command(bin, "status", "--dev", dir, "--json").Output()
	if err != nil {
		return api.ClusterStatus{}, err
	}
	var st api.ClusterStatus
	err = json.Unmarshal(out, &st)
	return st, err
}

// devRun is a `mailcluster dev` started by a test.
type devRun struct {
	bin, dir string
	info     clusterInfo
	out      *syncBuffer
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error // set once exited is closed
}

// startDev builds the binary and starts `mailcluster dev` the way a user
// does, and waits for the demo account. Cleanup stops it with Ctrl-C and,
// if the test failed, logs what the cluster printed.
func startDev(t *testing.T) *devRun {
	t.Helper()
	start := time.Now()
	d := &devRun{bin: buildBinary(t), dir: filepath.Join(t.TempDir(), "dev"), out: &syncBuffer{}, exited: make(chan struct{})}
	t.Logf("built in %v", time.Since(start))
	base := devBasePort(t, 3)
	d.cmd = exec.Command(d.bin, "dev", "--dir", d.dir, "--base-port", strconv.Itoa(base), "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mailcluster dev printed:\n%s", d.out.String())
			logs, _ := filepath.Glob(filepath.Join(d.dir, "*", "node.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("%s, last lines:\n%s", l, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
		_ = d.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
		}
	})
	waitUntil(t, "cluster.json with the demo account", 90*time.Second, func() bool {
		var err error
		d.info, err = readClusterInfo(d.dir)
		return err == nil && d.info.DemoUser != ""
	})
	t.Logf("cluster up after %v", time.Since(start))
	return d
}

// run runs one CLI command against the dev cluster and returns its output.
func (d *devRun) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	b, err := exec.Command(d.bin, append(args, "--dev", d.dir)...).CombinedOutput()
	return string(b), err
}

// TestDevClusterSurvivesKillNine runs the real binary the way a user does:
// `mailcluster dev`, then status, then kill -9 the leader's process.
func TestDevClusterSurvivesKillNine(t *testing.T) {
	start := time.Now()
	d := startDev(t)
	bin, dir, info, out, dev, exited := d.bin, d.dir, d.info, d.out, d.cmd, d.exited
	if len(info.Nodes) != 3 || info.DemoPassword == "" || info.TLSCert == "" {
		t.Fatalf("cluster.json: %+v", info)
	}
	for _, n := range info.Nodes {
		if n.PID == 0 || n.HTTP == "" || n.SMTP == "" || n.IMAP == "" || n.POP3 == "" {
			t.Fatalf("node entry incomplete: %+v", n)
		}
	}
	checkOutside(t, d)
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
		if d.waitErr != nil {
			t.Fatalf("dev exited with %v\n%s", d.waitErr, out.String())
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

// mxSend offers one message to the dev cluster's MX port and returns the
// server's answer to RCPT or DATA (nil when stored).
func mxSend(t *testing.T, addr, to string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("sender@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@remote.test\r\nTo: %s\r\nSubject: hello\r\n\r\nHello.\r\n", to)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// smtpCode reports whether err is the SMTP reply code with that enhanced
// status code.
func smtpCode(err error, code int, enhanced string) bool {
	var te *textproto.Error
	return errors.As(err, &te) && te.Code == code && strings.HasPrefix(te.Msg, enhanced+" ")
}

// The account commands an administrator uses, through the binary against
// a running cluster, each checked by what SMTP then does.
func TestUserCommands(t *testing.T) {
	d := startDev(t)
	mx := d.info.Nodes[1].SMTP
	dom := d.info.Domain
	erin, fred := "erin@"+dom, "fred@"+dom
	for _, u := range []string{erin, fred} {
		if out, err := d.run(t, "user", "add", u, "--password", "a long enough password"); err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
	if out, err := d.run(t, "user", "forward", erin, fred, "--keep-local"); err != nil {
		t.Fatalf("user forward: %v\n%s", err, out)
	}
	if out := mustShow(t, d, erin); !strings.Contains(out, "forwards to "+fred+" (keeps a local copy)") {
		t.Fatalf("user show after forward:\n%s", out)
	}
	if err := mxSend(t, mx, erin); err != nil {
		t.Fatalf("mail to a forwarding account: %v", err)
	}
	for _, u := range []string{erin, fred} {
		if out := mustShow(t, d, u); !strings.Contains(out, "messages 1 of unlimited") {
			t.Fatalf("%s after one forwarded message:\n%s", u, out)
		}
	}
	if out, err := d.run(t, "user", "forward", erin, ""); err != nil || strings.Contains(mustShow(t, d, erin), "forwards to") {
		t.Fatalf("stop forwarding: %v\n%s", err, out)
	}

	if out, err := d.run(t, "user", "disable", erin); err != nil {
		t.Fatalf("user disable: %v\n%s", err, out)
	}
	if err := mxSend(t, mx, erin); !smtpCode(err, 550, "5.2.1") {
		t.Fatalf("mail to a disabled account: %v, want 550 5.2.1", err)
	}
	if out, _ := d.run(t, "user", "list"); !strings.Contains(out, "disabled") {
		t.Fatalf("user list does not show the disabled account:\n%s", out)
	}
	if out, err := d.run(t, "user", "enable", erin); err != nil {
		t.Fatalf("user enable: %v\n%s", err, out)
	}
	if err := mxSend(t, mx, erin); err != nil {
		t.Fatalf("mail to the enabled account again: %v", err)
	}
	if out, err := d.run(t, "user", "show", "nobody@"+dom); err == nil || !strings.Contains(out, "no such account") {
		t.Fatalf("user show of a missing account: %v\n%s", err, out)
	}
}

// mustShow is `user show` with its columns' padding folded to one space.
func mustShow(t *testing.T, d *devRun, address string) string {
	t.Helper()
	out, err := d.run(t, "user", "show", address)
	if err != nil {
		t.Fatalf("user show %s: %v\n%s", address, err, out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

// checkOutside: the dev cluster's outside world is up on loopback, every
// node resolves through its DNS and sends to its sink, and a message given
// to the sink lands in outside/ as an .eml file and as a printed line.
func checkOutside(t *testing.T, d *devRun) {
	t.Helper()
	info := d.info
	if info.DNS == "" || info.OutsideSMTP == "" || info.OutsideDir != filepath.Join(d.dir, "outside") {
		t.Fatalf("cluster.json names no outside world: dns %q, outside_smtp %q, outside_dir %q", info.DNS, info.OutsideSMTP, info.OutsideDir)
	}
	// cluster.json is complete just before the summary is printed.
	waitUntil(t, "the summary to name the outside world", 10*time.Second, func() bool {
		return strings.Contains(d.out.String(), "outside:     DNS "+info.DNS+" and SMTP sink "+info.OutsideSMTP)
	})
	_, sinkPort, _ := strings.Cut(info.OutsideSMTP, "127.0.0.1:")
	for _, n := range info.Nodes {
		s, err := loadSettings([]string{"--config", n.Config}, func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.DNSServers, []string{info.DNS}) || strconv.Itoa(s.RemoteSMTPPort) != sinkPort {
			t.Fatalf("%s: dns_servers %v, smtp_remote_port %d; want [%s] and %s", n.ID, s.DNSServers, s.RemoteSMTPPort, info.DNS, sinkPort)
		}
	}
	// Any domain's MX is the sink, at 127.0.0.1.
	r, err := dnsclient.New([]string{info.DNS}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mx, err := r.LookupMX(t.Context(), "anywhere.test")
	if err != nil || len(mx) != 1 {
		t.Fatalf("MX anywhere.test: %v %v", mx, err)
	}
	ips, err := r.LookupIP(t.Context(), mx[0].Host)
	if err != nil || len(ips) != 1 || !ips[0].IsLoopback() {
		t.Fatalf("A %s: %v %v", mx[0].Host, ips, err)
	}
	// What the queue will do: hand the message to that MX at smtp_remote_port.
	c, err := smtp.Dial(net.JoinHostPort(ips[0].String(), sinkPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{ServerName: "localhost", RootCAs: devRoots(t, info.TLSCert)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(info.DemoUser); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("anyone@anywhere.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: %s\r\nTo: anyone@anywhere.test\r\nSubject: to the outside\r\n\r\nHello, world.\r\n", info.DemoUser)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
	var eml string
	waitUntil(t, "an .eml in outside/", 20*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(info.OutsideDir, "*.eml"))
		if len(files) == 1 {
			eml = files[0]
		}
		return eml != ""
	})
	b, err := os.ReadFile(eml)
	if err != nil || !strings.Contains(string(b), "Subject: to the outside\r\n") || !strings.Contains(string(b), "Delivered-To: anyone@anywhere.test\r\n") || !strings.Contains(string(b), "with ESMTPS") {
		t.Fatalf("%s: %v\n%s", eml, err, b)
	}
	waitUntil(t, "dev to print the message", 10*time.Second, func() bool {
		return strings.Contains(d.out.String(), "outside: "+info.DemoUser+" -> anyone@anywhere.test (") && strings.Contains(d.out.String(), eml)
	})
}

func devRoots(t *testing.T, certPath string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", certPath)
	}
	return pool
}
