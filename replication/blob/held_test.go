package blob

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// The held count stays current between walks: every body stored, copied
// in, deleted or quarantined changes it at once (status showed the count
// taken at start after hundreds of deliveries).
func TestHeldFollowsEveryChange(t *testing.T) {
	c := newTestCluster(t, 1, Options{}, ReplicatorOptions{
		Replicas:       1,
		RepairInterval: time.Hour,
		ScrubInterval:  time.Hour,
		GCInterval:     time.Hour,
	}, true)
	nd := c.nodes[0]
	eventually(t, "the count at start", func() bool { return !nd.repl.Stats().HeldAt.IsZero() })
	held := func(want int64, after string) {
		t.Helper()
		if got := nd.repl.Stats().Held; got != want {
			t.Fatalf("after %s: %d held, want %d", after, got, want)
		}
	}
	held(0, "start")
	var ids []ID
	for i := range 4 {
		ids = append(ids, mustPut(t, nd.store, []byte(fmt.Sprintf("body %d", i))))
	}
	held(4, "four puts")
	mustPut(t, nd.store, []byte("body 0"))
	held(4, "putting a body held already")
	raw, _, err := nd.store.OpenRaw(context.Background(), ids[3])
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(raw)
	_ = raw.Close()
	if err := nd.store.Delete(ids[3]); err != nil {
		t.Fatal(err)
	}
	held(3, "a delete")
	if err := nd.store.PutRaw(context.Background(), ids[3], &buf); err != nil {
		t.Fatal(err)
	}
	held(4, "a copy from a peer")
	if err := nd.store.Delete(ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := nd.store.Delete(ids[3]); err != nil {
		t.Fatal(err)
	}
	held(3, "deleting a body twice")
	flipByte(t, nd.store, ids[0], 3)
	if err := nd.store.Verify(context.Background(), ids[0]); err == nil {
		t.Fatal("a corrupt copy verified")
	}
	held(2, "a corrupt copy was quarantined")
	if err := nd.repl.Scrub(context.Background()); err != nil {
		t.Fatal(err)
	}
	held(2, "a scrub")
	if err := nd.repl.CollectGarbage(context.Background()); err != nil {
		t.Fatal(err)
	}
	held(2, "a GC pass")
}
