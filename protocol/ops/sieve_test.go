package ops_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
	"github.com/mailcluster/mailcluster/protocol/ops"
	"github.com/mailcluster/mailcluster/replication"
)

const sieveToken = "a-test-admin-token"

// noCluster answers the cluster routes; these tests do not use them.
type noCluster struct{}

func (noCluster) ClusterStatus(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{}, nil
}
func (noCluster) Ready(context.Context) error { return nil }
func (noCluster) Leave(context.Context) error { return errors.New("no") }

// memSieve is an in-memory script store of one account.
type memSieve struct {
	mu      sync.Mutex
	account string
	scripts map[string]string
	active  string
	err     error
}

func (m *memSieve) acct(a string) error {
	if m.err != nil {
		return m.err
	}
	if a != m.account {
		return replication.ErrNoSuchAccount
	}
	return nil
}

func (m *memSieve) ListScripts(_ context.Context, a string) ([]managesieve.Script, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.acct(a); err != nil {
		return nil, err
	}
	var out []managesieve.Script
	for n := range m.scripts {
		out = append(out, managesieve.Script{Name: n, Active: n == m.active})
	}
	slices.SortFunc(out, func(x, y managesieve.Script) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

func (m *memSieve) GetScript(_ context.Context, a, name string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.acct(a); err != nil {
		return "", err
	}
	s, ok := m.scripts[name]
	if !ok {
		return "", managesieve.ErrNoSuchScript
	}
	return s, nil
}

func (m *memSieve) PutScript(_ context.Context, a, name, content string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.acct(a); err != nil {
		return err
	}
	m.scripts[name] = content
	return nil
}

func (m *memSieve) DeleteScript(_ context.Context, a, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.acct(a); err != nil {
		return err
	}
	if _, ok := m.scripts[name]; !ok {
		return managesieve.ErrNoSuchScript
	}
	if m.active == name {
		return managesieve.ErrActive
	}
	delete(m.scripts, name)
	return nil
}

func (m *memSieve) SetActive(_ context.Context, a, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.acct(a); err != nil {
		return err
	}
	if _, ok := m.scripts[name]; !ok && name != "" {
		return managesieve.ErrNoSuchScript
	}
	m.active = name
	return nil
}

// noErrors is a stand-in compiler: "error" in a script is an error.
func noErrors(b []byte) error {
	if strings.Contains(string(b), "error") {
		return errors.New(`line 1: unknown command "error"`)
	}
	return nil
}

func sieveAPI(t *testing.T, st ops.SieveScripts) *api.Client {
	t.Helper()
	h := ops.NewHandler(ops.Options{Cluster: noCluster{}, Token: sieveToken, Sieve: st, SieveCheck: noErrors, SieveMaxScriptSize: 100})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &api.Client{BaseURL: srv.URL, Token: sieveToken}
}

func status(err error) int {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Status
	}
	if err == nil {
		return 200
	}
	return -1
}

func TestSieveEndpoints(t *testing.T) {
	const alice = "alice@example.test"
	st := &memSieve{account: alice, scripts: map[string]string{}}
	c := sieveAPI(t, st)
	ctx := context.Background()

	if l, err := c.SieveScripts(ctx, alice); err != nil || l == nil || len(l) != 0 {
		t.Fatalf("empty list: %#v %v", l, err)
	}
	if err := c.PutSieveScript(ctx, alice, "main", api.SievePutRequest{Content: "keep;"}); err != nil {
		t.Fatal(err)
	}
	// A name with a slash and a space travels escaped in the path.
	if err := c.PutSieveScript(ctx, alice, "lists/work 2", api.SievePutRequest{Content: "discard;", Activate: true}); err != nil {
		t.Fatal(err)
	}
	l, err := c.SieveScripts(ctx, alice)
	if want := []api.SieveScriptInfo{{Name: "lists/work 2", Active: true}, {Name: "main"}}; err != nil || !slices.Equal(l, want) {
		t.Fatalf("list %v %v, want %v", l, err, want)
	}
	got, err := c.SieveScript(ctx, alice, "lists/work 2")
	if err != nil || got != (api.SieveScript{Name: "lists/work 2", Active: true, Content: "discard;"}) {
		t.Fatalf("get %+v %v", got, err)
	}

	for name, tc := range map[string]struct {
		err  error
		want int
		text string
	}{
		"invalid script": {c.PutSieveScript(ctx, alice, "x", api.SievePutRequest{Content: "error;"}), 400, "not valid Sieve: line 1"},
		"too large":      {c.PutSieveScript(ctx, alice, "x", api.SievePutRequest{Content: strings.Repeat("#", 101)}), 413, "at most 100"},
		"bad name":       {c.PutSieveScript(ctx, alice, "a\tb", api.SievePutRequest{Content: "keep;"}), 400, "control"},
		"no such script": {c.Do(ctx, "GET", "/api/users/"+alice+"/sieve/scripts/nope", nil, nil), 404, "no such script"},
		"activate none":  {c.SetSieveActive(ctx, alice, api.SieveActiveRequest{Name: "nope"}), 404, "no such script"},
		"delete active":  {c.DeleteSieveScript(ctx, alice, "lists/work 2"), 409, "deactivate it first"},
		"no account":     {c.PutSieveScript(ctx, "bob@example.test", "x", api.SievePutRequest{Content: "keep;"}), 404, "no such account"},
		"unknown field":  {c.Do(ctx, "PUT", "/api/users/"+alice+"/sieve/active", map[string]string{"script": "x"}, nil), 400, "unknown field"},
	} {
		if status(tc.err) != tc.want || !strings.Contains(tc.err.Error(), tc.text) {
			t.Errorf("%s: %v (status %d), want %d with %q", name, tc.err, status(tc.err), tc.want, tc.text)
		}
	}
	if _, ok := st.scripts["x"]; ok {
		t.Fatal("a refused script was stored")
	}

	if err := c.SetSieveActive(ctx, alice, api.SieveActiveRequest{Name: ""}); err != nil {
		t.Fatal(err)
	}
	if st.active != "" {
		t.Fatalf("active after deactivate: %q", st.active)
	}
	if err := c.DeleteSieveScript(ctx, alice, "lists/work 2"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSieveScript(ctx, alice, "lists/work 2"); status(err) != 404 {
		t.Fatalf("delete twice: %v", err)
	}

	st.err = replication.ErrNoQuorum
	if _, err := c.SieveScripts(ctx, alice); status(err) != http.StatusServiceUnavailable {
		t.Fatalf("store without quorum: %v", err)
	}

	// The routes sit behind the admin token like every /api route.
	c.Token = "wrong token, wrong token"
	if _, err := c.SieveScripts(ctx, alice); status(err) != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestSieveRoutesNeedAStore(t *testing.T) {
	srv := httptest.NewServer(ops.NewHandler(ops.Options{Cluster: noCluster{}, Token: sieveToken}))
	defer srv.Close()
	c := &api.Client{BaseURL: srv.URL, Token: sieveToken}
	if _, err := c.SieveScripts(context.Background(), "a@b.test"); status(err) != http.StatusNotFound {
		t.Fatalf("without a store: %v", err)
	}
}
