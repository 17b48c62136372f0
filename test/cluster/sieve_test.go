package cluster

import (
	"errors"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/replication"
)

// A script written through one node is what every other node lists and
// runs at once: the listing's barrier and the delivery path's addressing
// barrier cover script changes. Of vacation claims made through every
// node at once for one sender, exactly one wins.
func TestSieveAcrossNodes(t *testing.T) {
	c := New(t, Options{})
	withAccounts(t, c, "alice")
	const acct = "alice@example.test"
	l := c.Leader()
	var others []int
	for _, i := range c.Running() {
		if i != l {
			others = append(others, i)
		}
	}
	writer, reader := c.Node(others[0]).Store(), c.Node(others[1]).Store()
	for _, name := range []string{"main", "spare"} {
		RetryIdempotent(t, "put "+name, func() error {
			return writer.PutSieveScript(ctxT(t), acct, name, `require "fileinto"; fileinto "`+name+`";`)
		})
	}
	RetryIdempotent(t, "activate", func() error { return writer.SetActiveSieveScript(ctxT(t), acct, "main") })

	list, err := reader.SieveScripts(ctxT(t), acct)
	if err != nil || len(list) != 2 || !list[0].Active || list[0].Name != "main" {
		t.Fatalf("list on another node: %+v %v", list, err)
	}
	if err := reader.AddressingBarrier(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	act, ok, err := reader.ActiveSieveScript(ctxT(t), acct)
	if err != nil || !ok || act.Name != "main" {
		t.Fatalf("active on another node: %+v %v %v", act, ok, err)
	}
	// Switch through the reader, delete through the writer: the writer
	// sees the switch, so the delete is not refused as active.
	RetryIdempotent(t, "switch", func() error { return reader.SetActiveSieveScript(ctxT(t), acct, "spare") })
	if err := writer.DeleteSieveScript(ctxT(t), acct, "main"); err != nil {
		t.Fatalf("delete after the switch elsewhere: %v", err)
	}
	if err := writer.DeleteSieveScript(ctxT(t), acct, "spare"); !errors.Is(err, replication.ErrScriptActive) {
		t.Fatalf("delete of the active script: %v", err)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, failed := 0, 0
	for _, i := range c.Running() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := c.Node(i).Store().ClaimVacation(ctxT(t), acct, "bob@remote.test", "away", 7)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// An election under load: the claim may or may not have
				// been committed, so it cannot be retried blindly.
				t.Logf("claim on node %d: %v", i, err)
				failed++
			}
			if ok {
				wins++
			}
		}()
	}
	wg.Wait()
	if wins > 1 || wins == 0 && failed == 0 {
		t.Fatalf("%d vacation claims won (%d failed), want 1", wins, failed)
	}
	due, err := reader.VacationDue(ctxT(t), acct, "bob@remote.test", "away", 7)
	if err != nil || due && wins == 1 {
		t.Fatalf("due on another node after the claim: %v %v", due, err)
	}
}
