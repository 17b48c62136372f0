package imap_test

import (
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// An account may not have more mailboxes than max_mailboxes_per_account:
// CREATE (and a RENAME that creates parents) beyond it gets NO [LIMIT]
// and creates nothing. The limit that counts is the one of the node the
// command came through (it travels in the Raft command, so every node
// decides alike): here node i allows 7+i mailboxes, and every new account
// has six.
func TestCreateStopsAtTheMailboxLimit(t *testing.T) {
	e := newEnv(t, cluster.Options{Configure: func(i int, cfg *node.Config) {
		cfg.MaxMailboxesPerAccount = 7 + i
	}})
	u := e.user(t, "hoarder")
	c0 := e.dialTLS(t, 0, u, nil)
	c1 := e.dialTLS(t, 1, u, nil)
	c2 := e.dialTLS(t, 2, u, nil)

	for _, name := range []string{"A", "B"} { // 7th and 8th: node 1 allows 8
		if err := c1.Create(name, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", name, err)
		}
	}
	expectCode(t, c1.Create("C", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeLimit)
	expectCode(t, c0.Create("C", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeLimit)
	// A parent counts: node 2 allows one more, not two.
	expectCode(t, c2.Create("P/C", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeLimit)
	expectCode(t, c1.Rename("A", "P/A", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeLimit)
	if err := c2.Rename("A", "A2", nil).Wait(); err != nil {
		t.Fatalf("a RENAME that creates nothing is not limited: %v", err)
	}
	if err := c2.Create("C", nil).Wait(); err != nil {
		t.Fatalf("9th mailbox through node 2: %v", err)
	}
	expectCode(t, c2.Create("D", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeLimit)

	// Nothing refused was created, as every node lists it.
	for i, c := range []*imapclient.Client{c0, c1, c2} {
		boxes, err := c.List("", "*", nil).Collect()
		if err != nil {
			t.Fatalf("LIST on node %d: %v", i, err)
		}
		names := map[string]bool{}
		for _, b := range boxes {
			names[b.Mailbox] = true
		}
		if len(boxes) != 9 || names["P"] || names["D"] || !names["A2"] || !names["C"] {
			t.Fatalf("node %d lists %d mailboxes: %v", i, len(boxes), fmt.Sprint(names))
		}
	}
	// Deleting makes room again.
	if err := c0.Delete("A2").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Create("D", nil).Wait(); err != nil {
		t.Fatalf("CREATE after DELETE made room: %v", err)
	}
}
