package managesieve

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sieveConnect runs Debian's sieve-connect (a Perl ManageSieve client)
// against the server, non-interactively: the password comes on file
// descriptor 3, STARTTLS is taken (the test certificate is self-signed:
// --notlsverify).
func sieveConnect(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() {
		_, _ = pw.WriteString(testPass + "\n")
		pw.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sieve-connect", append([]string{"--server", host, "--port", port, "--user", testUser,
		"--passwordfd", "3", "--notlsverify", "--authmech", "PLAIN"}, args...)...)
	cmd.ExtraFiles = []*os.File{pr}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// The scripts a real client uploads, lists, activates, downloads and
// deletes are the ones the store holds.
func TestSieveConnect(t *testing.T) {
	if _, err := exec.LookPath("sieve-connect"); err != nil {
		t.Skip("sieve-connect is not installed (Debian: apt-get install sieve-connect)")
	}
	st := newFakeStore()
	srv := startServer(t, st, Options{})
	dir := t.TempDir()
	local := filepath.Join(dir, "filters.sieve")
	if err := os.WriteFile(local, []byte(script1), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := sieveConnect(t, srv.addr, args...)
		if err != nil {
			t.Fatalf("sieve-connect %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("--upload", "--localsieve", local, "--remotesieve", "filters")
	if got, _ := st.get("filters"); got != script1 {
		t.Fatalf("uploaded %q", got)
	}
	run("--activate", "--remotesieve", "filters")
	if st.activeName() != "filters" {
		t.Fatalf("active: %q", st.activeName())
	}
	// --debug shows the dialogue: STARTTLS came before the password.
	out := run("--list", "--debug")
	if !strings.Contains(out, `"filters" ACTIVE`) {
		t.Fatalf("list: %q", out)
	}
	if tlsAt, authAt := strings.Index(out, "TLS activated"), strings.Index(out, ">>> AUTHENTICATE"); tlsAt < 0 || authAt < tlsAt {
		t.Fatalf("the password was not sent inside TLS:\n%s", out)
	}
	back := filepath.Join(dir, "back.sieve")
	run("--download", "--remotesieve", "filters", "--localsieve", back)
	if got, err := os.ReadFile(back); err != nil || string(got) != script1 {
		t.Fatalf("downloaded %q, %v", got, err)
	}
	bad := filepath.Join(dir, "bad.sieve")
	if err := os.WriteFile(bad, []byte("error;\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := sieveConnect(t, srv.addr, "--upload", "--localsieve", bad, "--remotesieve", "bad"); err == nil || !strings.Contains(out, "unknown command") {
		t.Fatalf("upload of an invalid script: %v\n%s", err, out)
	}
	run("--deactivate")
	run("--delete", "--remotesieve", "filters")
	if _, ok := st.get("filters"); ok {
		t.Fatal("the script is still there after --delete")
	}
}
