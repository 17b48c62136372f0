package imap_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// pythonScript drives the server with Python's imaplib: the commands a
// script or an old client uses, IDLE through raw commands, STARTTLS.
const pythonScript = `
import imaplib, ssl, sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def ok(result, what):
    typ, data = result
    if typ != 'OK':
        print('FAIL', what, typ, data, flush=True)
        sys.exit(1)
    return data

M = imaplib.IMAP4(host, port)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ok(M.starttls(ssl_context=ctx), 'starttls')
ok(M.login(user, password), 'login')
data = ok(M.select('INBOX'), 'select')
if int(data[0]) != 3:
    print('FAIL select count', data, flush=True); sys.exit(1)
data = ok(M.search(None, 'SUBJECT', '"python 2"'), 'search')
if data[0].split() != [b'2']:
    print('FAIL search', data, flush=True); sys.exit(1)
data = ok(M.fetch('1:3', '(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)'), 'fetch')
if b'python 1' not in data[0][1]:
    print('FAIL fetch headers', data, flush=True); sys.exit(1)
data = ok(M.fetch('2', '(RFC822)'), 'fetch body')
if b'body of python 2' not in data[0][1]:
    print('FAIL fetch body', data, flush=True); sys.exit(1)
data = ok(M.store('1', '+FLAGS', '(\\Flagged \\Deleted)'), 'store')
if b'\\Deleted' not in data[0]:
    print('FAIL store', data, flush=True); sys.exit(1)
ok(M.copy('2:3', 'Archive'), 'copy')
data = ok(M.expunge(), 'expunge')
if data != [b'1']:
    print('FAIL expunge', data, flush=True); sys.exit(1)
ok(M.create('Py/Sub'), 'create')
typ, data = M.list('""', 'Py*')
if typ != 'OK' or len(data) != 2:
    print('FAIL list', typ, data, flush=True); sys.exit(1)
data = ok(M.status('Archive', '(MESSAGES UIDNEXT)'), 'status')
if b'MESSAGES 2' not in data[0]:
    print('FAIL status', data, flush=True); sys.exit(1)

# IDLE through raw commands: imaplib has no idle() before Python 3.14.
tag = M._new_tag()
M.send(tag + b' IDLE\r\n')
line = M.readline()
if not line.startswith(b'+'):
    print('FAIL idle', line, flush=True); sys.exit(1)
print('IDLING', flush=True)
while True:
    line = M.readline()
    if not line:
        print('FAIL idle eof', flush=True); sys.exit(1)
    if line.strip().endswith(b'EXISTS'):
        break
M.send(b'DONE\r\n')
while True:
    line = M.readline()
    if line.startswith(tag):
        if b' OK' not in line:
            print('FAIL idle done', line, flush=True); sys.exit(1)
        break
ok(M.close(), 'close')
M.logout()
print('PASS', flush=True)
`

func TestPythonImaplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (apt-get install python3): skipping the imaplib test")
	}
	e := newEnv(t, cluster.Options{})
	u := e.user(t, "python")
	for i := 1; i <= 3; i++ {
		e.deliver(t, i%3, u, message(fmt.Sprintf("python %d", i), fmt.Sprintf("body of python %d", i)))
	}
	script := filepath.Join(t.TempDir(), "imaplib_test.py")
	if err := os.WriteFile(script, []byte(pythonScript), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(e.c.Node(1).Endpoint(node.EndpointIMAP), ":")
	cmd := exec.CommandContext(ctxT(t), python, script, host, port, u, password)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out = append(out, line)
		if line == "IDLING" {
			// Delivered through another node: the IDLE on node 1 must see it.
			e.deliver(t, 2, u, message("while idling", "x"))
		}
	}
	if err := cmd.Wait(); err != nil || len(out) == 0 || out[len(out)-1] != "PASS" {
		t.Fatalf("imaplib: %v\nstdout: %q\nstderr: %s", err, out, stderr.String())
	}
}

// TestMbsync syncs a 500-message account to a local Maildir and back with
// mbsync (Debian's isync), through different nodes.
func TestMbsync(t *testing.T) {
	mbsync, err := exec.LookPath("mbsync")
	if err != nil {
		t.Skip("mbsync is not installed (apt-get install isync): skipping the mbsync test")
	}
	e := newEnv(t, cluster.Options{})
	u := e.user(t, "sync")
	const total = 500
	var mu sync.Mutex
	sent := map[[32]byte]bool{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 8 {
				body := message(fmt.Sprintf("sync %d", i), strings.Repeat(fmt.Sprintf("line %d of message %d\r\n", i%7, i), 1+i%40))
				e.deliver(t, i%3, u, body)
				mu.Lock()
				sent[sha256.Sum256(body)] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow() // a delivery failed: the counts below would only repeat it
	}

	dir := t.TempDir()
	certFile := filepath.Join(dir, "server.pem")
	writeServerCert(t, e, certFile)
	maildir := filepath.Join(dir, "mail")
	if err := os.MkdirAll(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(i int) string {
		t.Helper()
		rc := filepath.Join(dir, fmt.Sprintf("mbsyncrc.%d", i))
		_, port, _ := strings.Cut(e.c.Node(i).Endpoint(node.EndpointIMAPS), ":")
		conf := fmt.Sprintf(`IMAPAccount test
Host 127.0.0.1
Port %s
User %s
Pass "%s"
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account test

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
CopyArrivalDate yes
`, port, u, password, certFile, maildir, maildir)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		// A hang guard, not a timing assertion: syncing 500 messages over
		// TLS can take longer than one wait on a machine at load 15.
		ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
		defer cancel()
		cmd := exec.CommandContext(ctx, mbsync, "-c", rc, "-a")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mbsync through node %d: %v\n%s", i, err, out)
		}
		return string(out)
	}

	// Down: every message arrives intact.
	run(0)
	local := readMaildir(t, filepath.Join(maildir, "INBOX"))
	if len(local) != total {
		t.Fatalf("the Maildir holds %d messages, want %d", len(local), total)
	}
	for sum := range local {
		if !sent[sum] {
			f := maildirFiles(t, filepath.Join(maildir, "INBOX"))[0]
			b, _ := os.ReadFile(f)
			t.Fatalf("a synced message differs from every delivered one, e.g. %q", b)
		}
	}

	// Local changes: read 50, delete 20, add 30, and a new folder.
	files := maildirFiles(t, filepath.Join(maildir, "INBOX"))
	for i, f := range files[:70] {
		flags := "S"
		if i >= 50 {
			flags = "ST" // trashed: mbsync expunges it on the server
		}
		base := filepath.Base(f)
		base, _, _ = strings.Cut(base, ":2,")
		if err := os.Rename(f, filepath.Join(maildir, "INBOX", "cur", base+":2,"+flags)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		writeMaildirMessage(t, filepath.Join(maildir, "INBOX"), fmt.Sprintf("local%d", i), message(fmt.Sprintf("written locally %d", i), "x"))
	}
	for i := range 5 {
		writeMaildirMessage(t, filepath.Join(maildir, "Local"), fmt.Sprintf("folder%d", i), message(fmt.Sprintf("local folder %d", i), "y"))
	}
	up := run(2) // up, through another node

	c := e.dialTLS(t, 1, u, nil)
	d := mustSelect(t, c, "INBOX", false)
	if want := uint32(total - 20 + 30); d.NumMessages != want {
		t.Fatalf("after syncing up the server holds %d messages, want %d; mbsync said:\n%s", d.NumMessages, want, up)
	}
	seen, err := c.Search(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil || len(seen.AllSeqNums()) != 50 {
		t.Fatalf("\\Seen on %d messages (%v), want 50", len(seen.AllSeqNums()), err)
	}
	// STATUS passes a read barrier: asked again while an election makes
	// it NO [UNAVAILABLE].
	var st *imap.StatusData
	waitFor(t, "STATUS of the new folder", func() bool {
		st, err = c.Status("Local", &imap.StatusOptions{NumMessages: true}).Wait()
		var ie *imap.Error
		return !errors.As(err, &ie) || ie.Code != imap.ResponseCodeUnavailable
	})
	if err != nil || *st.NumMessages != 5 {
		t.Fatalf("the new folder: %+v %v", st, err)
	}

	// Server-side changes come down again.
	if _, err := c.Store(imap.SeqSetNum(1, 2, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		e.deliver(t, i%3, u, message(fmt.Sprintf("late %d", i), "z"))
	}
	run(1)
	files = maildirFiles(t, filepath.Join(maildir, "INBOX"))
	flagged := 0
	for _, f := range files {
		if _, fl, _ := strings.Cut(filepath.Base(f), ":2,"); strings.Contains(fl, "F") {
			flagged++
		}
	}
	if len(files) != total-20+30+10 || flagged != 3 {
		t.Fatalf("after syncing down again: %d files, %d flagged", len(files), flagged)
	}
	// A last run has nothing to do and changes nothing.
	run(0)
	if again := maildirFiles(t, filepath.Join(maildir, "INBOX")); len(again) != len(files) {
		t.Fatalf("an idle sync changed the Maildir: %d files, was %d", len(again), len(files))
	}
	if d := mustSelect(t, c, "INBOX", false); d.NumMessages != uint32(len(files)) {
		t.Fatalf("an idle sync changed the server: %d messages", d.NumMessages)
	}
}

// writeServerCert saves the nodes' self-signed certificate for mbsync.
func writeServerCert(t *testing.T, e *env, path string) {
	t.Helper()
	conn, err := tls.Dial("tcp", e.c.Node(0).Endpoint(node.EndpointIMAPS), e.c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cert := conn.ConnectionState().PeerCertificates[0]
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, filepath.Join(dir, sub, e.Name()))
		}
	}
	return out
}

func readMaildir(t *testing.T, dir string) map[[32]byte]bool {
	t.Helper()
	out := map[[32]byte]bool{}
	for _, f := range maildirFiles(t, dir) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// mbsync stores messages with LF line ends and its own X-TUID
		// header; compare without it, in CRLF.
		if i := bytes.Index(b, []byte("\nX-TUID: ")); i >= 0 {
			if j := bytes.IndexByte(b[i+1:], '\n'); j >= 0 {
				b = append(b[:i+1:i+1], b[i+1+j+1:]...)
			}
		}
		b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
		out[sha256.Sum256(b)] = true
	}
	return out
}

func writeMaildirMessage(t *testing.T, dir, name string, body []byte) {
	t.Helper()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	unique := fmt.Sprintf("%d.%s.test", time.Now().UnixNano(), name)
	if err := os.WriteFile(filepath.Join(dir, "new", unique), body, 0o600); err != nil {
		t.Fatal(err)
	}
}
