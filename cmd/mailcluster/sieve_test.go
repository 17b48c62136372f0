package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
	"github.com/mailcluster/mailcluster/protocol/ops"
	"github.com/mailcluster/mailcluster/replication"
)

// scriptStore is an in-memory ops.SieveScripts for one account.
type scriptStore struct {
	mu      sync.Mutex
	scripts map[string]string
	active  string
}

func (s *scriptStore) known(account string) error {
	if account != "alice@example.test" {
		return replication.ErrNoSuchAccount
	}
	return nil
}

func (s *scriptStore) ListScripts(_ context.Context, account string) ([]managesieve.Script, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.known(account); err != nil {
		return nil, err
	}
	var out []managesieve.Script
	for n := range s.scripts {
		out = append(out, managesieve.Script{Name: n, Active: n == s.active})
	}
	slices.SortFunc(out, func(a, b managesieve.Script) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s *scriptStore) GetScript(_ context.Context, account, name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.known(account); err != nil {
		return "", err
	}
	c, ok := s.scripts[name]
	if !ok {
		return "", managesieve.ErrNoSuchScript
	}
	return c, nil
}

func (s *scriptStore) PutScript(_ context.Context, account, name, content string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.known(account); err != nil {
		return err
	}
	s.scripts[name] = content
	return nil
}

func (s *scriptStore) DeleteScript(_ context.Context, account, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.known(account); err != nil {
		return err
	}
	if _, ok := s.scripts[name]; !ok {
		return managesieve.ErrNoSuchScript
	}
	if s.active == name {
		return managesieve.ErrActive
	}
	delete(s.scripts, name)
	return nil
}

func (s *scriptStore) SetActive(_ context.Context, account, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.known(account); err != nil {
		return err
	}
	if _, ok := s.scripts[name]; !ok && name != "" {
		return managesieve.ErrNoSuchScript
	}
	s.active = name
	return nil
}

type idleCluster struct{}

func (idleCluster) ClusterStatus(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{}, nil
}
func (idleCluster) Ready(context.Context) error { return nil }
func (idleCluster) Leave(context.Context) error { return errors.New("not here") }

// The sieve commands against a node's real admin handler over a
// script store in memory (the node's adapter is tested with the node).
func TestSieveCommands(t *testing.T) {
	st := &scriptStore{scripts: map[string]string{}}
	check := func(b []byte) error {
		if strings.Contains(string(b), "error") {
			return errors.New(`line 2: unknown command "error"`)
		}
		return nil
	}
	srv := httptest.NewServer(ops.NewHandler(ops.Options{Cluster: idleCluster{}, Token: testToken, Sieve: st, SieveCheck: check}))
	defer srv.Close()
	run := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, errOut := cli(append(args, "--addr", srv.URL, "--token", testToken)...)
		if code != wantCode {
			t.Fatalf("mailcluster %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	const alice = "alice@example.test"
	if out := run(0, "sieve", "list", alice); !strings.Contains(out, "no Sieve scripts") {
		t.Fatalf("list of nothing: %s", out)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "main.sieve")
	script := "require \"fileinto\";\nif header :contains \"list-id\" \"x\" { fileinto \"Lists\"; }\n"
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	run(0, "sieve", "put", alice, "main", file, "--activate")
	run(0, "sieve", "put", alice, "spare", file)
	if st.scripts["main"] != script || st.active != "main" {
		t.Fatalf("stored %q, active %q", st.scripts["main"], st.active)
	}
	out := run(0, "sieve", "list", alice)
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	if !slices.Equal(rows, []string{"SCRIPT STATE", "main active", "spare -"}) {
		t.Fatalf("list:\n%s", out)
	}
	var l []api.SieveScriptInfo
	if err := json.Unmarshal([]byte(run(0, "sieve", "list", alice, "--json")), &l); err != nil || len(l) != 2 {
		t.Fatalf("list --json: %v %v", l, err)
	}
	if out := run(0, "sieve", "get", alice, "main"); out != script {
		t.Fatalf("get: %q", out)
	}
	bad := filepath.Join(dir, "bad.sieve")
	if err := os.WriteFile(bad, []byte("keep;\nerror;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(1, "sieve", "put", alice, "bad", bad); !strings.Contains(out, `not valid Sieve: line 2: unknown command "error"`) {
		t.Fatalf("put of an invalid script: %s", out)
	}
	if out := run(1, "sieve", "delete", alice, "main"); !strings.Contains(out, "deactivate it first") {
		t.Fatalf("delete of the active script: %s", out)
	}
	run(0, "sieve", "activate", alice, "spare")
	if st.active != "spare" {
		t.Fatalf("active %q", st.active)
	}
	run(0, "sieve", "deactivate", alice)
	if st.active != "" {
		t.Fatalf("active after deactivate %q", st.active)
	}
	run(0, "sieve", "delete", alice, "main")
	if out := run(1, "sieve", "get", alice, "main"); !strings.Contains(out, "no such script") {
		t.Fatalf("get of a deleted script: %s", out)
	}
	if out := run(1, "sieve", "list", "bob@example.test"); !strings.Contains(out, "no such account") {
		t.Fatalf("list of an unknown account: %s", out)
	}
	if out := run(1, "sieve", "activate", alice); !strings.Contains(out, "usage: mailcluster sieve activate") {
		t.Fatalf("activate without a name: %s", out)
	}
	if out := run(0, "sieve", "help"); !strings.Contains(out, "sieve put <address> <name> [file|-] [--activate]") {
		t.Fatalf("help: %s", out)
	}
}
