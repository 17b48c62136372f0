package delivery_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// subjectCheck is a check that reads the stored message's summary.
type subjectCheck struct{ seen []string }

func (c *subjectCheck) Name() string { return "subject" }

func (c *subjectCheck) Check(_ context.Context, m *delivery.Message) error {
	s, err := m.Summary()
	if err != nil {
		return err
	}
	c.seen = append(c.seen, s.Envelope.Subject)
	if strings.Contains(s.Envelope.Subject, "spam") {
		return &delivery.RejectedError{Check: c.Name(), Permanent: true, Reason: "looks like spam"}
	}
	return nil
}

// TestPipelineOverTheReplicatedStore runs deliveries through a real
// three-node cluster: recipients resolved on a follower, checks that read
// the parsed summary, one commit for all recipients, nothing committed
// for a refused message.
func TestPipelineOverTheReplicatedStore(t *testing.T) {
	c := cluster.New(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	defer cancel()
	leader := c.Node(c.Leader()).Store()
	cluster.Retry(t, "add the domain", func() error { return leader.AddDomain(ctx, "example.test") })
	for _, u := range []string{"alice", "bob"} {
		cluster.Retry(t, "add "+u, func() error {
			_, err := leader.AddUser(ctx, replication.NewUser{Address: u + "@example.test", Password: "correct horse battery"})
			return err
		})
	}
	follower := c.Node((c.Leader() + 1) % 3).Store()
	check := &subjectCheck{}
	p := delivery.New(delivery.Config{Store: follower, Checks: []delivery.Check{check}})

	send := func(subject string) (delivery.Result, error) {
		d, err := p.Begin(ctx, delivery.Envelope{Source: delivery.SourceMX, Sender: "s@remote.test"})
		if err != nil {
			return delivery.Result{}, err
		}
		defer d.Abort()
		for _, r := range []string{"alice@example.test", "bob@example.test"} {
			if err := d.AddRecipient(ctx, r); err != nil {
				return delivery.Result{}, err
			}
		}
		if err := d.Body(ctx, strings.NewReader("Subject: "+subject+"\r\n\r\nhello\r\n"), 0); err != nil {
			return delivery.Result{}, err
		}
		return d.Commit(ctx)
	}
	res, err := send("hello there")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 2 || res.Delivered[0].Err() != nil || res.Delivered[1].Err() != nil {
		t.Fatalf("result %+v", res)
	}
	if _, err := send("buy spam now"); !errors.Is(err, delivery.ErrRejected) {
		t.Fatalf("spam: %v, want a rejection", err)
	}
	if len(check.seen) != 2 || check.seen[0] != "hello there" {
		t.Fatalf("the check saw %q", check.seen)
	}
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		mb, err := leader.OpenMailbox(ctx, u, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		if len(mb.UIDs) != 1 {
			t.Fatalf("%s has %d messages, want the one that passed the check", u, len(mb.UIDs))
		}
	}
}
