package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"
)

// Port offsets inside each dev node's block of devPortBlock ports.
const (
	devPortBlock = 10
	offHTTP      = 0
	offGossip    = 1
	offCluster   = 2
	offSMTP      = 3
	offSubmit    = 4
	offSubmitTLS = 5
	offIMAP      = 6
	offIMAPS     = 7
	offPOP3      = 8
	offPOP3S     = 9
)

type devOptions struct {
	dir      string
	nodes    int
	basePort int
	domain   string
	logLevel string
}

// cmdDev starts a cluster of separate node processes on loopback and keeps
// it running until interrupted.
func cmdDev(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o devOptions
	fs.StringVar(&o.dir, "dir", "./dev-cluster", "folder for the nodes' data, configs, logs and cluster.json")
	fs.IntVar(&o.nodes, "nodes", 3, "number of nodes")
	fs.IntVar(&o.basePort, "base-port", 10000, "first port; node i uses the block base+10*(i-1) .. +9, the outside world base+10*nodes (DNS) and +1 (SMTP sink), ManageSieve base+10*nodes+2+(i-1) (0: pick free ports)")
	fs.StringVar(&o.domain, "domain", "example.test", "mail domain of the demo account")
	fs.StringVar(&o.logLevel, "log-level", "info", "node log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.nodes < 1 || o.nodes > 9 {
		return errors.New("--nodes must be between 1 and 9")
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	o.dir = dir
	exe, err := os.Executable()
	if err != nil {
		return err
	}

	info, fresh, err := prepareDevCluster(o)
	if err != nil {
		return err
	}
	var outMu sync.Mutex
	outside, err := startOutside(o, info, stdout, &outMu)
	if err != nil {
		return err
	}
	defer outside.close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	procs := make([]*exec.Cmd, len(info.Nodes))
	var wg sync.WaitGroup
	// abort stops every node quietly and reports err.
	abort := func(err error) error {
		stop()
		stopAll(procs)
		wg.Wait()
		return err
	}
	for i := range info.Nodes {
		n := &info.Nodes[i]
		logFile, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		cmd := exec.Command(exe, "serve", "--config", n.Config)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = childProcAttr()
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			return abort(fmt.Errorf("start %s: %w", n.ID, err))
		}
		procs[i] = cmd
		n.PID = cmd.Process.Pid
		wg.Add(1)
		go func(id string, cmd *exec.Cmd) {
			defer wg.Done()
			err := cmd.Wait()
			_ = logFile.Close()
			if ctx.Err() != nil {
				return
			}
			outMu.Lock()
			defer outMu.Unlock()
			how := "exited"
			if err != nil {
				how = err.Error()
			}
			fmt.Fprintf(stdout, "%s (pid %d) stopped: %s — restart it with: %s serve --config %s\n", id, cmd.Process.Pid, how, exe, filepath.Join(o.dir, id, "node.toml"))
		}(n.ID, cmd)
	}
	if err := writeClusterInfo(o.dir, info); err != nil {
		return abort(err)
	}

	leader, err := waitForCluster(ctx, info, 60*time.Second)
	if err != nil {
		return abort(fmt.Errorf("%w; see the logs in %s/*/node.log", err, o.dir))
	}
	if fresh {
		if err := setupDemo(ctx, &info); err != nil {
			return abort(fmt.Errorf("create the demo account: %w", err))
		}
		if err := writeClusterInfo(o.dir, info); err != nil {
			return abort(err)
		}
	}
	outMu.Lock()
	printDevBanner(stdout, o, info, leader)
	outMu.Unlock()

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the dev cluster…")
	stopAll(procs)
	wg.Wait()
	fmt.Fprintf(stdout, "stopped; the data stays in %s (run `mailcluster dev --dir %s` again to resume)\n", o.dir, o.dir)
	return nil
}

// prepareDevCluster creates or reuses the folder: a fresh one gets a new
// secret, token and ports; an existing one keeps them, so the same cluster
// comes back with its data.
func prepareDevCluster(o devOptions) (clusterInfo, bool, error) {
	if info, err := readClusterInfo(o.dir); err == nil {
		for _, n := range info.Nodes {
			if n.PID > 0 && processAlive(n.PID) && reachable(n.HTTP) {
				return info, false, fmt.Errorf("a dev cluster already runs in %s (%s has pid %d)", o.dir, n.ID, n.PID)
			}
		}
		for _, n := range info.Nodes {
			if _, err := os.Stat(n.Config); err != nil {
				return info, false, fmt.Errorf("%s is incomplete (%v): remove the folder to start afresh", o.dir, err)
			}
		}
		if info.DNS == "" {
			// A folder from before the outside world: give it one, so its
			// nodes never resolve through the system's DNS.
			if err := addOutside(o, &info); err != nil {
				return info, false, err
			}
		}
		return info, false, nil
	}
	if entries, err := os.ReadDir(o.dir); err == nil && len(entries) > 0 {
		return clusterInfo{}, false, fmt.Errorf("%s exists and is not a dev cluster folder: choose another --dir", o.dir)
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return clusterInfo{}, false, err
	}
	secret, token := randomToken(32), randomToken(24)
	secretPath := filepath.Join(o.dir, "secret")
	if err := os.WriteFile(secretPath, []byte(secret+"\n"), 0o600); err != nil {
		return clusterInfo{}, false, err
	}
	certPath, keyPath := filepath.Join(o.dir, "tls-cert.pem"), filepath.Join(o.dir, "tls-key.pem")
	if err := writeSelfSigned(certPath, keyPath); err != nil {
		return clusterInfo{}, false, fmt.Errorf("dev TLS certificate: %w", err)
	}
	ports, err := devPorts(o.basePort, o.nodes)
	if err != nil {
		return clusterInfo{}, false, err
	}
	info := clusterInfo{Domain: o.domain, AdminToken: token, TLSCert: certPath}
	dnsPort, sinkPort, err := devOutsidePorts(o.basePort, o.nodes)
	if err != nil {
		return clusterInfo{}, false, err
	}
	info.DNS, info.OutsideSMTP = loopback(dnsPort), loopback(sinkPort)
	info.OutsideDir = filepath.Join(o.dir, "outside")
	var gossipAddrs []string
	for i := range o.nodes {
		gossipAddrs = append(gossipAddrs, loopback(ports[i][offGossip]))
	}
	sievePorts, err := devSievePorts(o.basePort, o.nodes)
	if err != nil {
		return clusterInfo{}, false, err
	}
	for i := range o.nodes {
		id := "node" + strconv.Itoa(i+1)
		nodeDir := filepath.Join(o.dir, id)
		p := ports[i]
		s := settings{
			ManageSieveAddr: loopback(sievePorts[i]),
			AuthServID:      "mx." + o.domain,
			NodeID:          id,
			DataDir:         filepath.Join(nodeDir, "data"),
			SecretFile:      secretPath,
			AdminToken:      token,
			GossipAddr:      loopback(p[offGossip]),
			ClusterAddr:     loopback(p[offCluster]),
			HTTPAddr:        loopback(p[offHTTP]),
			Hostname:        id + ".localhost",
			TLSCert:         certPath,
			TLSKey:          keyPath,
			SMTPAddr:        loopback(p[offSMTP]),
			SubmissionAddr:  loopback(p[offSubmit]),
			SubmissionsAddr: loopback(p[offSubmitTLS]),
			IMAPAddr:        loopback(p[offIMAP]),
			IMAPSAddr:       loopback(p[offIMAPS]),
			POP3Addr:        loopback(p[offPOP3]),
			POP3SAddr:       loopback(p[offPOP3S]),
			BootstrapExpect: o.nodes,
			DNSServers:      []string{info.DNS},
			RemoteSMTPPort:  sinkPort,
			Profile:         "lan",
			LogFormat:       "text",
			LogLevel:        o.logLevel,
		}
		for j, addr := range gossipAddrs {
			if j != i {
				s.Join = append(s.Join, addr)
			}
		}
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			return info, false, err
		}
		cfgPath := filepath.Join(nodeDir, "node.toml")
		if err := writeNodeConfig(cfgPath, s); err != nil {
			return info, false, err
		}
		info.Nodes = append(info.Nodes, nodeInfo{
			ID:         id,
			HTTP:       s.HTTPAddr,
			Gossip:     s.GossipAddr,
			Cluster:    s.ClusterAddr,
			SMTP:       s.SMTPAddr,
			Submission: s.SubmissionAddr,
			SMTPS:      s.SubmissionsAddr,
			IMAP:       s.IMAPAddr,
			IMAPS:      s.IMAPSAddr,
			POP3:       s.POP3Addr,
			POP3S:      s.POP3SAddr,
			Sieve:      s.ManageSieveAddr,
			Config:     cfgPath,
			Log:        filepath.Join(nodeDir, "node.log"),
		})
	}
	return info, true, nil
}

// writeNodeConfig writes only the keys a dev node sets, as a readable example.
func writeNodeConfig(path string, s settings) error {
	var buf bytes.Buffer
	buf.WriteString("# Written by `mailcluster dev`. Every key is also a --flag and a MAILCLUSTER_* variable.\n")
	if err := toml.NewEncoder(&buf).Encode(struct {
		NodeID          string   `toml:"node_id"`
		DataDir         string   `toml:"data_dir"`
		SecretFile      string   `toml:"secret_file"`
		AdminToken      string   `toml:"admin_token"`
		GossipAddr      string   `toml:"gossip_addr"`
		ClusterAddr     string   `toml:"cluster_addr"`
		HTTPAddr        string   `toml:"http_addr"`
		Join            []string `toml:"join"`
		BootstrapExpect int      `toml:"bootstrap_expect"`
		Profile         string   `toml:"profile"`
		Hostname        string   `toml:"hostname"`
		TLSCert         string   `toml:"tls_cert"`
		TLSKey          string   `toml:"tls_key"`
		SMTPAddr        string   `toml:"smtp_addr"`
		SubmissionAddr  string   `toml:"submission_addr"`
		SubmissionsAddr string   `toml:"submissions_addr"`
		IMAPAddr        string   `toml:"imap_addr"`
		IMAPSAddr       string   `toml:"imaps_addr"`
		POP3Addr        string   `toml:"pop3_addr"`
		POP3SAddr       string   `toml:"pop3s_addr"`
		ManageSieveAddr string   `toml:"managesieve_addr"`
		AuthServID      string   `toml:"authserv_id"`
		DNSServers      []string `toml:"dns_servers"`
		RemoteSMTPPort  int      `toml:"smtp_remote_port"`
		LogFormat       string   `toml:"log_format"`
		LogLevel        string   `toml:"log_level"`
	}{s.NodeID, s.DataDir, s.SecretFile, s.AdminToken, s.GossipAddr, s.ClusterAddr, s.HTTPAddr, s.Join, s.BootstrapExpect, s.Profile,
		s.Hostname, s.TLSCert, s.TLSKey, s.SMTPAddr, s.SubmissionAddr, s.SubmissionsAddr, s.IMAPAddr, s.IMAPSAddr, s.POP3Addr, s.POP3SAddr,
		s.ManageSieveAddr, s.AuthServID, s.DNSServers, s.RemoteSMTPPort, s.LogFormat, s.LogLevel}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

func writeClusterInfo(dir string, info clusterInfo) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "cluster.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "cluster.json"))
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// devPorts returns each node's block of ports: fixed from base, or free
// ones picked by the kernel when base is 0.
func devPorts(base, nodes int) ([][devPortBlock]int, error) {
	out := make([][devPortBlock]int, nodes)
	for i := range nodes {
		for k := range devPortBlock {
			if base == 0 {
				p, err := freePort(k == offGossip)
				if err != nil {
					return nil, err
				}
				out[i][k] = p
				continue
			}
			p := base + devPortBlock*i + k
			if err := portFree(p, k == offGossip); err != nil {
				return nil, fmt.Errorf("port %d is taken (%v): pass --base-port with a free range, or 0 to pick free ports", p, err)
			}
			out[i][k] = p
		}
	}
	return out, nil
}

func portFree(port int, udpToo bool) error {
	ln, err := net.Listen("tcp", loopback(port))
	if err != nil {
		return err
	}
	_ = ln.Close()
	if udpToo {
		pc, err := net.ListenPacket("udp", loopback(port))
		if err != nil {
			return err
		}
		_ = pc.Close()
	}
	return nil
}

func freePort(udpToo bool) (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if portFree(port, udpToo) == nil {
			return port, nil
		}
	}
	return 0, errors.New("no free port found")
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// waitForCluster polls until every node is a voter under one leader.
func waitForCluster(ctx context.Context, info clusterInfo, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		for _, n := range info.Nodes {
			c := &adminClient{addr: n.HTTP, token: info.AdminToken, http: devHTTP()}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.api().Status(rctx)
			rcancel()
			if err != nil {
				last = err.Error()
				continue
			}
			voters := 0
			for _, m := range st.Members {
				if m.Suffrage == "voter" && m.State != "" {
					voters++
				}
			}
			if st.Leader != "" && voters == len(info.Nodes) {
				return st.Leader, nil
			}
			last = fmt.Sprintf("leader %q, %d of %d voters", st.Leader, voters, len(info.Nodes))
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the cluster did not form within %s (%s)", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func stopAll(procs []*exec.Cmd) {
	for _, p := range procs {
		if p != nil && p.Process != nil && p.ProcessState == nil {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, p := range procs {
		if p == nil || p.Process == nil {
			continue
		}
		for processAlive(p.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(p.Process.Pid) {
			_ = p.Process.Kill()
		}
	}
}

func processAlive(pid int) bool {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	if proc.Signal(syscall.Signal(0)) != nil {
		return false
	}
	// A zombie child still answers signal 0; check its state.
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err == nil {
		fields := strings.Fields(string(b))
		if len(fields) > 2 && fields[2] == "Z" {
			return false
		}
	}
	return true
}

func printDevBanner(w io.Writer, o devOptions, info clusterInfo, leader string) {
	fmt.Fprintf(w, "mailcluster dev: %d nodes up in %s, leader %s\n\n", len(info.Nodes), o.dir, leader)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPID\tHTTP\tSMTP\tSUBMISSION\tIMAP\tPOP3\tMANAGESIEVE")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, n := range info.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.PID, n.HTTP, dash(n.SMTP), dash(n.Submission), dash(n.IMAP), dash(n.POP3), dash(n.Sieve))
	}
	_ = tw.Flush()
	if info.DemoUser != "" {
		fmt.Fprintf(w, "\ndemo account: %s  password: %s\n", info.DemoUser, info.DemoPassword)
	}
	if info.DNS != "" {
		fmt.Fprintf(w, "\noutside:     DNS %s and SMTP sink %s, both on loopback: mail for any other\n", info.DNS, info.OutsideSMTP)
		fmt.Fprintf(w, "             domain goes to the sink and lands in %s/<time>-<n>.eml\n", info.OutsideDir)
	}
	fmt.Fprintf(w, "\nstatus:      mailcluster status --dev %s\n", o.dir)
	fmt.Fprintf(w, "endpoints:   %s\n", filepath.Join(o.dir, "cluster.json"))
	fmt.Fprintf(w, "logs:        %s/nodeN/node.log\n", o.dir)
	fmt.Fprintln(w, "try a crash: kill -9 <pid> of any node; the others keep serving")
	fmt.Fprintln(w, "Ctrl-C stops all nodes; the data stays for the next `mailcluster dev`.")
}
