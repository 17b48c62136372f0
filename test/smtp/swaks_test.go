package smtp_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// swaks finds Debian's swaks with TLS support, or skips the test saying
// how to get it.
func swaks(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks is not installed (apt-get install swaks libio-socket-ssl-perl); skipping the swaks tests")
	}
	out, _ := exec.Command(path, "--support").CombinedOutput()
	if !strings.Contains(string(out), "TLS supported") {
		t.Skip("swaks has no TLS support (apt-get install libio-socket-ssl-perl libnet-ssleay-perl); skipping the swaks tests")
	}
	return path
}

func runSwaks(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--timeout", "20", "--helo", "client.test"}, args...)...).CombinedOutput()
	return string(out), err
}

// swaks drives the submission port (STARTTLS, then AUTH PLAIN) and the MX
// port, as an administrator checking a new server would.
func TestSwaks(t *testing.T) {
	bin := swaks(t)
	c := newCluster(t, nil, "alice", "bob")

	out, err := runSwaks(t, bin, "--server", c.Node(0).Endpoint(node.EndpointSubmission),
		"--tls", "--auth", "PLAIN", "--auth-user", addr("alice"), "--auth-password", password,
		"--from", addr("alice"), "--to", addr("bob"),
		"--header", "Subject: swaks submission", "--body", "Sent by swaks over STARTTLS.")
	if err != nil {
		t.Fatalf("swaks submission: %v\n%s", err, out)
	}
	for _, want := range []string{"<-  220 2.0.0 Ready to start TLS", "<~  235 2.0.0", "<~  250 2.0.0 OK: stored on the cluster"} {
		if !strings.Contains(out, want) {
			t.Fatalf("swaks transcript lacks %q:\n%s", want, out)
		}
	}

	out, err = runSwaks(t, bin, "--server", c.Node(1).Endpoint(node.EndpointSMTP),
		"--from", "someone@remote.test", "--to", addr("alice"),
		"--header", "Subject: swaks mx", "--body", "Sent by swaks to the MX port.")
	if err != nil {
		t.Fatalf("swaks MX: %v\n%s", err, out)
	}

	// A refusal, as swaks shows it.
	out, err = runSwaks(t, bin, "--server", c.Node(2).Endpoint(node.EndpointSMTP),
		"--from", "someone@remote.test", "--to", "nobody@"+domain)
	if err == nil || !strings.Contains(out, "<** 550 5.1.1") {
		t.Fatalf("swaks to an unknown user: %v\n%s", err, out)
	}

	if got := withSubject(mailbox(t, c, 2, "bob"), "swaks submission"); len(got) != 1 || !strings.Contains(got[0].Body, "TLSv1.3") {
		t.Fatalf("bob has %d copies of the submitted message", len(got))
	}
	if got := withSubject(mailbox(t, c, 0, "alice"), "swaks mx"); len(got) != 1 {
		t.Fatalf("alice has %d copies of the MX message", len(got))
	}
}
