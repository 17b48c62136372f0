package spamfilter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	password = "correct horse battery staple"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts three nodes with the test domain and these users.
func newCluster(t *testing.T, users ...string) *cluster.Cluster {
	t.Helper()
	c := cluster.New(t, cluster.Options{})
	s := c.Node(c.Leader()).Store()
	cluster.RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), domain); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil
	})
	for _, user := range users {
		cluster.RetryIdempotent(t, "add "+user, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: user, Password: password})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil
			}
			return err
		})
	}
	return c
}

// storeAll stores the messages in user's mailbox through node n's store
// (no MX inspection: this is mail the user already had), several at a
// time so that Raft batches them. A delivery that failed is settled and,
// if it did not take effect, done again, so each message is there once.
func storeAll(t *testing.T, n *node.Node, user, mailbox string, msgs []msg) {
	t.Helper()
	rcpts := []replication.Recipient{{Account: user, Mailbox: mailbox}}
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
				d, err := n.Store().Deliver(ctx, strings.NewReader(msgs[i].body), rcpts, time.Now(), 0)
				cancel()
				if err == nil {
					err = d.Results[0].Err()
				}
				errs[i] = err
			}
		}()
	}
	for i := range msgs {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			continue
		}
		if !replication.Temporary(err) {
			t.Fatalf("store %s: %v", msgs[i].id, err)
		}
		cluster.Settle(t, n)
		found, err := cluster.Holding(n, []byte(msgs[i].body), rcpts)
		if err != nil {
			t.Fatalf("store %s: %v", msgs[i].id, err)
		}
		if found == nil {
			if err := cluster.Deliver(t, n, []byte(msgs[i].body), rcpts).Results[0].Err(); err != nil {
				t.Fatalf("store %s: %v", msgs[i].id, err)
			}
		}
	}
}

// dialIMAP connects to node i's implicit-TLS IMAP port and logs in.
func dialIMAP(t *testing.T, c *cluster.Cluster, i int, user string) *imapclient.Client {
	t.Helper()
	cl, err := imapclient.DialTLS(c.Node(i).Endpoint(node.EndpointIMAPS), &imapclient.Options{TLSConfig: c.ClientTLS()})
	if err != nil {
		t.Fatalf("dial imaps on node %d: %v", i, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if err := cl.Login(user, password).Wait(); err != nil {
		t.Fatalf("login on node %d: %v", i, err)
	}
	if !cl.Caps().Has(imap.CapMove) {
		t.Fatalf("node %d does not offer MOVE: the training would not be by MOVE", i)
	}
	return cl
}

// uids lists every UID of mailbox, selecting it.
func uids(t *testing.T, cl *imapclient.Client, mailbox string) []imap.UID {
	t.Helper()
	if _, err := cl.Select(mailbox, nil).Wait(); err != nil {
		t.Fatalf("select %s: %v", mailbox, err)
	}
	data, err := cl.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		t.Fatalf("uid search %s: %v", mailbox, err)
	}
	return data.AllUIDs()
}

// stored is what the test reads back of one delivered message.
type stored struct {
	mailbox string
	uid     imap.UID
	id      string // X-Corpus-ID
	status  string // X-Spam-Status
	score   string // X-Spam-Score
	junkKW  bool   // has the $Junk keyword
}

// readBack fetches the header and flags of every message in INBOX and
// Junk whose UID is at least from[mailbox].
func readBack(t *testing.T, cl *imapclient.Client, from map[string]imap.UID) []stored {
	t.Helper()
	var out []stored
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	for _, box := range []string{"INBOX", "Junk"} {
		d, err := cl.Select(box, nil).Wait()
		if err != nil {
			t.Fatalf("select %s: %v", box, err)
		}
		if d.UIDNext <= from[box] {
			continue
		}
		set := imap.UIDSet{imap.UIDRange{Start: from[box], Stop: 0}}
		msgs, err := cl.Fetch(set, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			t.Fatalf("fetch %s: %v", box, err)
		}
		for _, m := range msgs {
			if m.UID < from[box] { // "n:*" includes the last message when n is beyond it
				continue
			}
			h, err := mail.ReadMessage(io.MultiReader(bytes.NewReader(m.FindBodySection(section)), strings.NewReader("\r\n")))
			if err != nil {
				t.Fatalf("%s UID %d: header: %v", box, m.UID, err)
			}
			s := stored{mailbox: box, uid: m.UID, id: h.Header.Get("X-Corpus-ID"), status: h.Header.Get("X-Spam-Status"), score: h.Header.Get("X-Spam-Score")}
			for _, f := range m.Flags {
				if strings.EqualFold(string(f), "$Junk") {
					s.junkKW = true
				}
			}
			out = append(out, s)
		}
	}
	return out
}

// uidNext is the next UID of INBOX and Junk: what arrives later has one
// at least that large.
func uidNext(t *testing.T, cl *imapclient.Client) map[string]imap.UID {
	t.Helper()
	out := map[string]imap.UID{}
	for _, box := range []string{"INBOX", "Junk"} {
		d, err := cl.Select(box, nil).Wait()
		if err != nil {
			t.Fatalf("select %s: %v", box, err)
		}
		out[box] = d.UIDNext
	}
	return out
}

// sendMX sends each message to rcpt through node i's MX port, several
// transactions on one connection, as another server would. A 451 (an
// election on a loaded machine) is tried again on a new connection; a
// message then stored twice is read back twice, which the test allows.
// It calls nothing on t, so it may run on its own goroutine.
func sendMX(c *cluster.Cluster, i int, rcpt string, msgs []msg) error {
	addr := c.Node(i).Endpoint(node.EndpointSMTP)
	deadline := time.Now().Add(cluster.RetryWindow)
	var cl *gosmtp.Client
	defer func() {
		if cl != nil {
			_ = cl.Close()
		}
	}()
	for _, m := range msgs {
		for {
			var err error
			if cl == nil {
				if cl, err = gosmtp.Dial(addr); err != nil {
					return fmt.Errorf("node %d: dial MX: %w", i, err)
				}
			}
			if err = sendOne(cl, "sender@remote.test", rcpt, m.body); err == nil {
				break
			}
			var se *gosmtp.SMTPError
			if !errors.As(err, &se) || se.Code/100 != 4 || time.Now().After(deadline) {
				return fmt.Errorf("node %d: send %s: %w", i, m.id, err)
			}
			_ = cl.Close()
			cl = nil
			time.Sleep(50 * time.Millisecond)
		}
	}
	return cl.Quit()
}

func sendOne(cl *gosmtp.Client, from, to, body string) error {
	if err := cl.Mail(from, nil); err != nil {
		return err
	}
	if err := cl.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

// sendSpread sends the messages through every node's MX port at once,
// message k through node k mod 3.
func sendSpread(t *testing.T, c *cluster.Cluster, rcpt string, msgs []msg) {
	t.Helper()
	nodes := c.Running()
	per := make([][]msg, len(nodes))
	for k, m := range msgs {
		per[k%len(nodes)] = append(per[k%len(nodes)], m)
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for j, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = sendMX(c, i, rcpt, per[j])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// stateSize is member m's state as a snapshot ships it (the logical size)
// and the size of its bbolt file (which grows in large steps), after a
// read barrier: every write committed before the call is in it.
func stateSize(t *testing.T, m *cluster.Member) (snapshot, file int64) {
	t.Helper()
	cluster.Retry(t, "barrier on "+m.ID, func() error { return m.Node.Store().Barrier(ctxT(t)) })
	snap, err := m.Node.FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if snapshot, err = snap.WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(m.Dir, "state", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	return snapshot, fi.Size()
}

// spamBuckets measures the classifier's own buckets in member m's state
// (their names are those of replication/state/cmd_spam.go): the bytes
// their pages hold in use, and their keys. It reads a snapshot written
// to a file, so the running node's database is not touched.
func spamBuckets(t *testing.T, m *cluster.Member) (inUse, keys int) {
	t.Helper()
	snap, err := m.Node.FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snapshot.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = snap.WriteTo(f)
	snap.Release()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for _, name := range []string{"spam_totals", "spam_tokens", "spam_trained"} {
			b := tx.Bucket([]byte(name))
			if b == nil {
				return fmt.Errorf("no bucket %s", name)
			}
			st := b.Stats()
			inUse += st.BranchInuse + st.LeafInuse + st.InlineBucketInuse
			keys += st.KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return inUse, keys
}
