package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/dnsclient"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestSettingsPrecedenceFileEnvFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(cfg, []byte(`
node_id = "from-file"
zone = "file-zone"
bootstrap_expect = 3
join = ["10.0.0.2:7946", "10.0.0.3:7946"]
dead_server_timeout = "5m"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings([]string{"--config", cfg, "--zone", "flag-zone"},
		env(map[string]string{"MAILCLUSTER_ZONE": "env-zone", "MAILCLUSTER_BOOTSTRAP_EXPECT": "5"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if s.NodeID != "from-file" || s.Zone != "flag-zone" || s.BootstrapExpect != 5 {
		t.Fatalf("got node_id=%q zone=%q expect=%d", s.NodeID, s.Zone, s.BootstrapExpect)
	}
	if len(s.Join) != 2 || time.Duration(s.DeadServerTimeout) != 5*time.Minute {
		t.Fatalf("join=%v timeout=%v", s.Join, time.Duration(s.DeadServerTimeout))
	}
	if s.GossipAddr != "0.0.0.0:7946" {
		t.Fatalf("default gossip_addr lost: %q", s.GossipAddr)
	}
}

func TestSettingsErrorsAreOneClearLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	_ = os.WriteFile(bad, []byte("node_id = \"x\"\nbootstrap_expected = 3\n"), 0o600)
	syntax := filepath.Join(dir, "syntax.toml")
	_ = os.WriteFile(syntax, []byte("node_id = \n"), 0o600)
	cases := map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"unknown key":   {[]string{"--config", bad}, nil, "unknown key bootstrap_expected"},
		"syntax":        {[]string{"--config", syntax}, nil, "config " + syntax},
		"bad duration":  {[]string{"--dead-server-timeout", "soon"}, nil, "--dead-server-timeout"},
		"bad env int":   {nil, map[string]string{"MAILCLUSTER_BOOTSTRAP_EXPECT": "three"}, "MAILCLUSTER_BOOTSTRAP_EXPECT"},
		"missing file":  {[]string{"--config", filepath.Join(dir, "nope.toml")}, nil, "nope.toml"},
		"unknown flag":  {[]string{"--no-such-flag"}, nil, "no-such-flag"},
		"stray arg":     {[]string{"extra"}, nil, "unexpected argument"},
		"secret file":   {[]string{"--secret-file", filepath.Join(dir, "missing")}, nil, "secret_file"},
		"config in env": {nil, map[string]string{"MAILCLUSTER_CONFIG": bad}, "unknown key"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := loadSettings(c.args, env(c.env), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

// serveErr runs "mailcluster serve" in-process and returns what it printed.
func serveErr(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"serve"}, args...), &stdout, &stderr)
	return code, stderr.String()
}

func TestServeRefusesBadConfigurationWithOneLine(t *testing.T) {
	dir := t.TempDir()
	secret := "a cluster secret long enough"
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	readOnly := filepath.Join(dir, "ro")
	_ = os.MkdirAll(readOnly, 0o500)
	base := func(extra ...string) []string {
		return append([]string{"--node-id", "n1", "--data-dir", filepath.Join(dir, "data"), "--gossip-addr", "127.0.0.1:0",
			"--cluster-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "error"}, extra...)
	}
	cases := map[string]struct {
		args []string
		want string
	}{
		"no secret":     {base(), "no cluster secret"},
		"short secret":  {base("--secret", "short"), "too short"},
		"port in use":   {base("--secret", secret, "--http-addr", busy.Addr().String()), "http_addr " + busy.Addr().String()},
		"bad profile":   {base("--secret", secret, "--profile", "moon"), "unknown profile"},
		"tls half":      {base("--secret", secret, "--tls-cert", "/x.pem"), "tls_cert and tls_key"},
		"tls no cert":   {base("--secret", secret, "--imaps-addr", "127.0.0.1:0"), "no TLS certificate"},
		"bad size":      {base("--secret", secret, "--max-message-size", "lots"), "max_message_size"},
		"unwritable":    {append(base("--secret", secret), "--data-dir", filepath.Join(readOnly, "sub", "data")), "data folder"},
		"bad log level": {base("--secret", secret, "--log-level", "loud"), "log_level"},
	}
	if os.Geteuid() == 0 {
		delete(cases, "unwritable") // root writes anywhere
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, out := serveErr(t, c.args...)
			if code == 0 || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, output %q; want it to mention %q", code, out, c.want)
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n"); lines > 0 {
				t.Fatalf("%d lines of output, want one: %q", lines+1, out)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "1024": 1024, "10K": 10 << 10, "50M": 50 << 20, "2g": 2 << 30, "1GB": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := parseSize("-1M"); err == nil {
		t.Error("negative size accepted")
	}
}

// dns_servers and smtp_remote_port are a key, a flag and a variable like
// the others; an unset dns_servers becomes the system's nameservers, which
// nodeConfig reads only then.
func TestDNSAndRemotePortSettings(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(cfg, []byte("dns_servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\nsmtp_remote_port = 2525\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := env(nil)
	s, err := loadSettings([]string{"--config", cfg}, none, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.DNSServers, ",") != "127.0.0.1:5353,[::1]:53" || s.RemoteSMTPPort != 2525 {
		t.Fatalf("from the file: %v %d", s.DNSServers, s.RemoteSMTPPort)
	}
	s, err = loadSettings([]string{"--dns-servers", "127.0.0.2:53, 127.0.0.3"}, env(map[string]string{"MAILCLUSTER_SMTP_REMOTE_PORT": "2526"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.DNSServers, ",") != "127.0.0.2:53,127.0.0.3" || s.RemoteSMTPPort != 2526 {
		t.Fatalf("flag and env: %v %d", s.DNSServers, s.RemoteSMTPPort)
	}
	s.Secret = "a cluster secret long enough"
	nc, err := nodeConfig(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(nc.DNSServers, ",") != "127.0.0.2:53,127.0.0.3" || nc.RemoteSMTPPort != 2526 {
		t.Fatalf("node config: %v %d", nc.DNSServers, nc.RemoteSMTPPort)
	}

	// The defaults: port 25, and the system's resolvers (read from
	// /etc/resolv.conf, never asked here).
	s, err = loadSettings(nil, none, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if s.RemoteSMTPPort != 25 || len(s.DNSServers) != 0 {
		t.Fatalf("defaults: %v %d", s.DNSServers, s.RemoteSMTPPort)
	}
	s.Secret = "a cluster secret long enough"
	want, sysErr := dnsclient.SystemServers()
	nc, err = nodeConfig(s, nil)
	if sysErr != nil {
		if err == nil || !strings.Contains(err.Error(), "dns_servers") {
			t.Fatalf("no system resolvers (%v): nodeConfig said %v", sysErr, err)
		}
		return
	}
	if err != nil || strings.Join(nc.DNSServers, ",") != strings.Join(want, ",") {
		t.Fatalf("default dns_servers %v (%v), want the system's %v", nc.DNSServers, err, want)
	}
}
