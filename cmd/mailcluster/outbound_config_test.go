package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The outbound settings reach node.Config from the file, the environment
// and flags; outbound_delay_dsn = 0 means never; the relay password can
// come from a file.
func TestOutboundSettings(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "relay.pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(cfg, []byte(`dns_servers = ["127.0.0.1:5353"]
outbound_retry = "1m, 10m,1h"
outbound_expiry = "72h"
outbound_delay_dsn = "0"
outbound_tls = "require"
relay_host = "smtp.provider.example:587"
relay_username = "me"
relay_password_file = "`+pw+`"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings([]string{"--config", cfg, "--outbound-concurrency", "8"},
		env(map[string]string{"MAILCLUSTER_OUTBOUND_LEASE": "5s", "MAILCLUSTER_OUTBOUND_MAX_PER_DESTINATION": "2"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s.Secret = "a cluster secret long enough"
	nc, err := nodeConfig(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nc.OutboundRetry, []time.Duration{time.Minute, 10 * time.Minute, time.Hour}) ||
		nc.OutboundExpiry != 72*time.Hour || nc.OutboundDelayDSN >= 0 || nc.OutboundLease != 5*time.Second ||
		nc.OutboundConcurrency != 8 || nc.OutboundMaxPerDestination != 2 || nc.OutboundTLS != "require" ||
		nc.RelayHost != "smtp.provider.example:587" || nc.RelayUsername != "me" || nc.RelayPassword != "s3cret" {
		t.Fatalf("node config: %+v", nc)
	}

	s, err = loadSettings([]string{"--dns-servers", "127.0.0.1"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s.Secret = "a cluster secret long enough"
	if nc, err = nodeConfig(s, nil); err != nil {
		t.Fatal(err)
	}
	if len(nc.OutboundRetry) != 7 || nc.OutboundRetry[6] != 2*time.Hour || nc.OutboundExpiry != 5*24*time.Hour ||
		nc.OutboundDelayDSN != 4*time.Hour || nc.OutboundLease != 10*time.Second || nc.OutboundConcurrency != 32 ||
		nc.OutboundMaxPerDestination != 4 || nc.OutboundTLS != "opportunistic" {
		t.Fatalf("defaults: %+v", nc)
	}

	s.OutboundRetry = "2m,soon"
	if _, err := nodeConfig(s, nil); err == nil || !strings.Contains(err.Error(), "outbound_retry") {
		t.Fatalf("bad retry schedule: %v", err)
	}
}
