package pop3

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// serverCertPEM fetches the certificate member i shows on POP3S, for
// clients that want a CA file.
func serverCertPEM(t *testing.T, c *cluster.Cluster, i int) string {
	t.Helper()
	conn, err := tls.Dial("tcp", c.Node(i).Endpoint(node.EndpointPOP3S), c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	der := conn.ConnectionState().PeerCertificates[0].Raw
	path := filepath.Join(t.TempDir(), "server.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, ok := strings.Cut(addr, ":")
	if !ok || strings.Contains(p, ":") {
		t.Fatalf("endpoint %q is not host:port", addr)
	}
	return h, p
}

// poplibScript logs in three ways (plain on loopback, STLS, implicit TLS),
// uses every command poplib has, deletes message 1 and prints JSON.
const poplibScript = `
import base64, json, poplib, ssl, sys
host, port, tls_port, cafile, user, password = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
out = {}

def session(p, key):
    r = {"welcome": p.getwelcome().decode()}
    r["capa"] = sorted(p.capa().keys())
    p.user(user)
    p.pass_(password)
    r["stat"] = list(p.stat())
    resp, lines, octets = p.list()
    r["list"] = [l.decode() for l in lines]
    resp, lines, octets = p.uidl()
    r["uidl"] = [l.decode() for l in lines]
    r["retr"], r["retr_octets"], r["top"] = [], [], []
    for n in range(1, r["stat"][0] + 1):
        resp, lines, octets = p.retr(n)
        r["retr"].append(base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode())
        r["retr_octets"].append(octets)
        resp, lines, octets = p.top(n, 2)
        r["top"].append(base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode())
    p.noop()
    p.dele(1)
    p.rset()
    out[key] = r
    return p

session(poplib.POP3(host, int(port), timeout=30), "plain").quit()
p = poplib.POP3(host, int(port), timeout=30)
p.stls(context=ctx)
session(p, "stls").quit()
p = session(poplib.POP3_SSL(host, int(tls_port), context=ctx, timeout=30), "ssl")
p.dele(1)
out["quit"] = p.quit().decode()
json.dump(out, sys.stdout)
`

type poplibSession struct {
	Welcome    string   `json:"welcome"`
	Capa       []string `json:"capa"`
	Stat       []int64  `json:"stat"`
	List       []string `json:"list"`
	UIDL       []string `json:"uidl"`
	Retr       []string `json:"retr"`
	RetrOctets []int64  `json:"retr_octets"`
	Top        []string `json:"top"`
}

func TestPythonPoplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (apt-get install python3); skipping the poplib client test")
	}
	if err := exec.Command(python, "-c", "import poplib, ssl").Run(); err != nil {
		t.Skipf("python3 has no poplib/ssl (%v); skipping the poplib client test", err)
	}
	c := cluster.New(t, cluster.Options{})
	addUsers(t, c, "alice")
	raw := [][]byte{smtpMessage(1, 3000), smtpMessage(2, 200_000), []byte("Subject: bare\n\n.dot\nend")}
	for i, b := range raw {
		deliver(t, c.Node(i), "alice", b)
	}
	i := 1
	host, port := hostPort(t, c.Node(i).Endpoint(node.EndpointPOP3))
	_, tlsPort := hostPort(t, c.Node(i).Endpoint(node.EndpointPOP3S))
	cmd := exec.CommandContext(ctxT(t), python, "-c", poplibScript, host, port, tlsPort, serverCertPEM(t, c, i), addr("alice"), password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, stderr.String())
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(stdout, &out); err != nil {
		t.Fatalf("poplib output %q: %v", stdout, err)
	}
	for _, key := range []string{"plain", "stls", "ssl"} {
		var s poplibSession
		if err := json.Unmarshal(out[key], &s); err != nil {
			t.Fatal(err)
		}
		if s.Stat[0] != int64(len(raw)) {
			t.Fatalf("%s: STAT %v", key, s.Stat)
		}
		var total int64
		for n, b64 := range s.Retr {
			got, _ := base64.StdEncoding.DecodeString(b64)
			want := wireForm(raw[n])
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: poplib RETR %d got %q…, want %q…", key, n+1, got[:min(len(got), 80)], want[:min(len(want), 80)])
			}
			if s.RetrOctets[n] != int64(len(want)) || s.List[n] != fmt.Sprintf("%d %d", n+1, len(want)) {
				t.Fatalf("%s: message %d: poplib counted %d octets, LIST said %q, sent %d", key, n+1, s.RetrOctets[n], s.List[n], len(want))
			}
			top, _ := base64.StdEncoding.DecodeString(s.Top[n])
			if !bytes.Equal(top, topOf(want, 2)) {
				t.Fatalf("%s: poplib TOP %d 2 = %q", key, n+1, top)
			}
			total += int64(len(want))
		}
		if s.Stat[1] != total {
			t.Fatalf("%s: STAT size %d, RETR sent %d", key, s.Stat[1], total)
		}
		if !slices.Contains(s.Capa, "UIDL") || !slices.Contains(s.Capa, "TOP") || !slices.Contains(s.Capa, "USER") {
			t.Fatalf("%s: CAPA %v", key, s.Capa)
		}
		if wantSTLS := key == "plain"; slices.Contains(s.Capa, "STLS") != wantSTLS {
			t.Fatalf("%s: CAPA %v", key, s.Capa)
		}
	}
	// The last session deleted message 1 at QUIT; the two RSET ones did not.
	var quit string
	_ = json.Unmarshal(out["quit"], &quit)
	if !strings.Contains(quit, "(1 messages deleted)") {
		t.Fatalf("QUIT: %q", quit)
	}
	if uids, _ := inbox(t, c, 0, "alice"); len(uids) != 2 {
		t.Fatalf("after poplib: %d messages, want 2", len(uids))
	}
}

// TestFetchmail fetches with fetchmail over STLS: first keeping the mail
// (UIDL remembers it), then again (nothing new), then after one more
// delivery (only it), then deleting everything.
func TestFetchmail(t *testing.T) {
	fetchmail, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Skip("fetchmail is not installed (apt-get install fetchmail); skipping the fetchmail client test")
	}
	c := cluster.New(t, cluster.Options{})
	addUsers(t, c, "alice")
	raw := [][]byte{smtpMessage(1, 2000), smtpMessage(2, 100_000)}
	for i, b := range raw {
		deliver(t, c.Node(i), "alice", b)
	}
	i := 2
	host, port := hostPort(t, c.Node(i).Endpoint(node.EndpointPOP3))
	dir := t.TempDir()
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert := serverCertPEM(t, c, i)
	run := func(keep bool) []string {
		t.Helper()
		before, _ := filepath.Glob(filepath.Join(outDir, "m.*"))
		opts := "fetchall"
		if keep {
			opts = "keep"
		}
		rc := fmt.Sprintf(`set no bouncemail
poll %s port %s protocol pop3 uidl timeout 30
  user "%s" there with password "%s" is "tester" here
  options %s no rewrite
  sslcertck sslcertfile "%s" sslcommonname "localhost"
  mda "/bin/sh -c 'cat > $(mktemp %s/m.XXXXXX)'"
`, host, port, addr("alice"), password, opts, cert, outDir)
		rcPath := filepath.Join(dir, "fetchmailrc")
		if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctxT(t), fetchmail, "--nodetach", "--nosyslog", "--verbose", "-f", rcPath, "--idfile", filepath.Join(dir, "fetchids"), "--pidfile", filepath.Join(dir, "pid"))
		cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
		out, err := cmd.CombinedOutput()
		// Exit code 1 means "no new mail", which is an answer too.
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
			t.Fatalf("fetchmail: %v\n%s", err, out)
		}
		after, _ := filepath.Glob(filepath.Join(outDir, "m.*"))
		var fresh []string
		for _, f := range after {
			if !slices.Contains(before, f) {
				fresh = append(fresh, f)
			}
		}
		// It saw STLS in CAPA and upgraded (its trace shows our replies).
		if !strings.Contains(string(out), "POP3< +OK begin TLS negotiation") {
			t.Fatalf("fetchmail did not use STLS:\n%s", out)
		}
		return fresh
	}
	// fetchmail hands the MDA the message with LF line ends and its own
	// Received header on top; the delivered text must follow intact.
	delivered := func(files []string, bodies ...[]byte) {
		t.Helper()
		if len(files) != len(bodies) {
			t.Fatalf("fetchmail delivered %d messages, want %d", len(files), len(bodies))
		}
		var got [][]byte
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b)
		}
		for _, want := range bodies {
			lf := bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))
			if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.HasSuffix(g, lf) }) {
				t.Fatalf("no fetched message ends with the delivered text %q…", lf[:80])
			}
		}
	}
	delivered(run(true), raw...)
	delivered(run(true)) // UIDL: nothing new
	late := smtpMessage(3, 500)
	deliver(t, c.Node(0), "alice", late)
	delivered(run(true), late)
	delivered(run(false), append(raw, late)...) // fetchall, then delete
	if uids, _ := inbox(t, c, 1, "alice"); len(uids) != 0 {
		t.Fatalf("after fetchmail without keep: %d messages left", len(uids))
	}
}
