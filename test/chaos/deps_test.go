package chaos_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDriverLinksNoServer: the chaos driver talks to nodes over their
// APIs only. It shares wire types through package api and the blob
// client for its checks, never the server's own packages.
func TestDriverLinksNoServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/chaos").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rest, ours := strings.CutPrefix(pkg, "github.com/mailcluster/mailcluster/")
		if !ours {
			continue
		}
		for _, server := range []string{"node", "protocol/", "replication/state", "consensus", "message"} {
			if rest == server || strings.HasPrefix(rest, server) {
				t.Errorf("the chaos driver links %s", pkg)
			}
		}
		if rest == "replication" {
			t.Errorf("the chaos driver links %s", pkg)
		}
	}
}
