package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A dev folder written before the outside world existed gets one on its
// next start: its nodes must not fall back to the system's DNS.
func TestDevFolderFromBeforeTheOutsideWorldGetsOne(t *testing.T) {
	dir := t.TempDir()
	var info clusterInfo
	info.Domain, info.AdminToken = "example.test", "token"
	for _, id := range []string{"node1", "node2"} {
		cfg := filepath.Join(dir, id, "node.toml")
		if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte("node_id = \""+id+"\"\nlog_level = \"warn\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		info.Nodes = append(info.Nodes, nodeInfo{ID: id, Config: cfg})
	}
	if err := writeClusterInfo(dir, info); err != nil {
		t.Fatal(err)
	}
	got, fresh, err := prepareDevCluster(devOptions{dir: dir, nodes: 2})
	if err != nil || fresh {
		t.Fatalf("resume: fresh %v, %v", fresh, err)
	}
	saved, err := readClusterInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.DNS == "" || got.OutsideSMTP == "" || saved.DNS != got.DNS || saved.OutsideSMTP != got.OutsideSMTP || saved.OutsideDir != filepath.Join(dir, "outside") {
		t.Fatalf("outside world: %+v, saved %+v", got, saved)
	}
	for _, n := range got.Nodes {
		s, err := loadSettings([]string{"--config", n.Config}, func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.DNSServers, []string{got.DNS}) || loopback(s.RemoteSMTPPort) != got.OutsideSMTP || s.NodeID != n.ID {
			t.Fatalf("%s after the upgrade: dns %v, port %d", n.ID, s.DNSServers, s.RemoteSMTPPort)
		}
	}
	// The next start changes nothing.
	again, _, err := prepareDevCluster(devOptions{dir: dir, nodes: 2})
	if err != nil || again.DNS != got.DNS {
		t.Fatalf("second resume: %v %v", again.DNS, err)
	}
}
