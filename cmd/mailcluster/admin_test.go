package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// testToken is the admin token test/cluster gives every node.
const testToken = "test-admin-token"

// cli runs one mailcluster command in-process, as a user would type it.
func cli(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// opsCall sends one raw request to a node's operations listener.
func opsCall(t *testing.T, addr, method, path, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// The admin commands send typed requests that the node decodes strictly
// (unknown fields are refused): every command works end to end.
func TestAdminCommandsEndToEnd(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	addr := c.Node(0).HTTPAddr()
	admin := func(args ...string) string {
		t.Helper()
		code, out, errOut := cli(append(args, "--addr", addr, "--token", testToken)...)
		if code != 0 {
			t.Fatalf("mailcluster %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	admin("domain", "add", "example.test")
	admin("user", "add", "alice@example.test", "--password", "a long enough password", "--quota", "10M", "--messages", "500")
	admin("user", "passwd", "alice@example.test", "--password", "another long password")
	admin("user", "quota", "alice@example.test", "--quota", "20M", "--messages", "600")
	admin("user", "forward", "alice@example.test", "bob@elsewhere.test", "--keep-local")
	admin("user", "disable", "alice@example.test")
	admin("alias", "add", "postmaster@example.test", "alice@example.test")
	admin("domain", "catchall", "example.test", "alice@example.test")

	var u api.UserInfo
	if err := json.Unmarshal([]byte(admin("user", "show", "alice@example.test", "--json")), &u); err != nil {
		t.Fatal(err)
	}
	if u.QuotaBytes != 20<<20 || u.QuotaMessages != 600 || !u.Disabled || !u.KeepLocal || len(u.Forward) != 1 || u.Forward[0] != "bob@elsewhere.test" {
		t.Fatalf("user show: %+v", u)
	}
	if out := admin("alias", "list"); !strings.Contains(out, "postmaster@example.test") {
		t.Fatalf("alias list: %s", out)
	}
	if out := admin("domain", "list"); !strings.Contains(out, "example.test") || !strings.Contains(out, "alice@example.test") {
		t.Fatalf("domain list: %s", out)
	}
	if out := admin("user", "list", "--domain", "example.test"); !strings.Contains(out, "alice@example.test") || !strings.Contains(out, "disabled") {
		t.Fatalf("user list: %s", out)
	}
	admin("user", "enable", "alice@example.test")
	admin("alias", "del", "postmaster@example.test")
	admin("user", "del", "alice@example.test")
	admin("domain", "catchall", "example.test", "")
	admin("domain", "del", "example.test")
	if code, _, errOut := cli("user", "show", "alice@example.test", "--addr", addr, "--token", testToken); code == 0 || !strings.Contains(errOut, "no such account") {
		t.Fatalf("show of a deleted user: exit %d: %s", code, errOut)
	}
}

// Guessing the admin token is throttled per client address: after ten
// wrong tokens the address gets 429 with Retry-After, even with the right
// token, and the CLI says why.
func TestWrongAdminTokensAreThrottled(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	addr := c.Node(0).HTTPAddr()
	for i := range 10 {
		code, _, errOut := cli("status", "--addr", addr, "--token", "wrong-token-"+strconv.Itoa(i))
		if code == 0 || !strings.Contains(errOut, "wrong admin token") {
			t.Fatalf("guess %d: exit %d: %s", i+1, code, errOut)
		}
	}
	resp, body := opsCall(t, addr, "GET", "/api/status", "wrong-token-10", "")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("guess 11: %s %s", resp.Status, body)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("guess 11: Retry-After %q", resp.Header.Get("Retry-After"))
	}
	resp, body = opsCall(t, addr, "GET", "/api/status", testToken, "")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right token from a blocked address: %s %s", resp.Status, body)
	}
	if code, _, errOut := cli("status", "--addr", addr, "--token", testToken); code == 0 || !strings.Contains(errOut, "too many wrong admin tokens") {
		t.Fatalf("CLI from a blocked address: exit %d: %s", code, errOut)
	}
	// Health and metrics are not behind the token and stay reachable.
	if resp, _ := opsCall(t, addr, "GET", "/healthz", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz from a blocked address: %s", resp.Status)
	}
}

// Parallel guesses are counted as they are checked: a burst from one
// address gets no more tries than a patient guesser.
func TestParallelWrongAdminTokensAreCountedBeforeChecking(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	addr := c.Node(0).HTTPAddr()
	const guesses = 100
	codes := make(chan int, guesses)
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+addr+"/api/status", nil)
			req.Header.Set("Authorization", "Bearer wrong-token-"+strconv.Itoa(i))
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			_ = resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for code := range codes {
		count[code]++
	}
	if count[http.StatusUnauthorized] != 10 || count[http.StatusTooManyRequests] != guesses-10 {
		t.Fatalf("answers to %d parallel wrong tokens: %v; want 10 × 401, the rest 429", guesses, count)
	}
}

// A request body is one JSON document: anything after it is refused, and
// nothing is changed.
func TestAdminRefusesTrailingGarbage(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	addr := c.Node(0).HTTPAddr()
	for name, body := range map[string]string{
		"second document": `{"name":"one.test"} {"name":"two.test"}`,
		"stray bytes":     `{"name":"three.test"}x`,
		"stray brace":     `{"name":"four.test"}}`,
	} {
		resp, answer := opsCall(t, addr, "POST", "/api/domains", testToken, body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(answer, "after the JSON document") {
			t.Errorf("%s: %s %s", name, resp.Status, answer)
		}
	}
	resp, answer := opsCall(t, addr, "POST", "/api/domains", testToken, "{\"name\":\"fine.test\"}\r\n")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("one document and a line end: %s %s", resp.Status, answer)
	}
	_, out, _ := cli("domain", "list", "--addr", addr, "--token", testToken)
	for _, d := range []string{"one.test", "two.test", "three.test", "four.test"} {
		if strings.Contains(out, d) {
			t.Errorf("a refused request created %s: %s", d, out)
		}
	}
}

// A body over the limit is refused with 413, not read to its end.
func TestAdminRefusesOversizeBody(t *testing.T) {
	c := cluster.New(t, cluster.Options{Nodes: 1})
	addr := c.Node(0).HTTPAddr()
	body := `{"targets":["` + strings.Repeat("a", 2<<20) + `@example.test"]}`
	resp, answer := opsCall(t, addr, "PUT", "/api/aliases/big@example.test", testToken, body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 MiB body: %s %.200s", resp.Status, answer)
	}
}

// A node refuses to start with an admin token short enough to guess.
func TestShortAdminTokenRefused(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--node-id", "n1", "--data-dir", filepath.Join(dir, "data"), "--gossip-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "error",
		"--secret", "a cluster secret long enough"}
	start := func(token string) (*node.Node, error) {
		s, err := loadSettings(append(args, "--admin-token", token), func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := nodeConfig(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		return node.Start(cfg)
	}
	n, err := start("secret")
	if err == nil {
		_ = n.Shutdown(t.Context())
		t.Fatal("a node started with a 6-character admin token")
	}
	if !strings.Contains(err.Error(), "admin_token is too short") {
		t.Fatalf("error %q does not name the setting", err)
	}
	// The CLI says the same in one line.
	code, _, errOut := cli(append(append([]string{"serve"}, args...), "--admin-token", "secret")...)
	if code == 0 || !strings.Contains(errOut, "admin_token is too short") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Fatalf("serve: exit %d: %q", code, errOut)
	}
	// What `mailcluster dev` generates (and the test harness uses) is fine.
	n, err = start(randomToken(24))
	if err != nil {
		t.Fatalf("a generated token: %v", err)
	}
	_ = n.Shutdown(t.Context())
}
