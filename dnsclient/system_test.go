package dnsclient

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestServersFromFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("# comment\nsearch example.org\nnameserver 10.0.0.53\nnameserver 2001:db8::53\noptions ndots:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := serversFromFile(conf)
	if err != nil || !slices.Equal(got, []string{"10.0.0.53:53", "[2001:db8::53]:53"}) {
		t.Fatalf("servers %v %v", got, err)
	}
	empty := filepath.Join(dir, "empty.conf")
	_ = os.WriteFile(empty, []byte("search example.org\n"), 0o600)
	if _, err := serversFromFile(empty); err == nil {
		t.Fatal("no nameserver line, no error")
	}
	if _, err := serversFromFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file, no error")
	}
}
