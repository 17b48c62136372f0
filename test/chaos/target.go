package chaos

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/replication/blob"
)

// Fault is a kind of failure the runner injects.
type Fault string

// The fault kinds, in the order a short schedule injects them.
const (
	KillLeader      Fault = "kill-leader"      // kill -9 the leader, start it again
	KillFollower    Fault = "kill-follower"    // kill -9 a follower, start it again
	FreezeLeader    Fault = "freeze-leader"    // stop the leader's processes past the election timeout, thaw
	PartitionLeader Fault = "partition-leader" // cut the leader off from the others (clients still reach it), heal
	WipeNode        Fault = "wipe-disk"        // kill -9 a node, delete its data, start it empty
	RollingRestart  Fault = "rolling-restart"  // stop and start every node in turn
)

// AllFaults lists every fault kind.
var AllFaults = []Fault{KillLeader, KillFollower, FreezeLeader, PartitionLeader, WipeNode, RollingRestart}

// Target is a cluster the runner can reach and break. Node indexes are 0..Nodes()-1
// and node i is named "node<i+1>".
type Target interface {
	Name() string
	Nodes() int
	// Client endpoints of node i; they stay the same across every fault.
	SMTPAddr(i int) string
	SubmissionsAddr(i int) string // submission with implicit TLS (port 465)
	IMAPSAddr(i int) string
	HTTPAddr(i int) string
	AdminToken() string
	ClientTLS() *tls.Config

	// Supports reports whether the target can inject a kind of fault.
	Supports(f Fault) bool
	// Kill stops node i at once: no leave, no flush.
	Kill(ctx context.Context, i int) error
	// Start starts a killed node on its old addresses and data.
	Start(ctx context.Context, i int) error
	// Restart stops node i gracefully and starts it again.
	Restart(ctx context.Context, i int) error
	// Wipe deletes a killed node's data, as if its disk had died.
	Wipe(ctx context.Context, i int) error
	// Freeze and Thaw suspend and resume node i's processes.
	Freeze(ctx context.Context, i int) error
	Thaw(ctx context.Context, i int) error
	// Isolate cuts node i off from the other nodes; clients still reach it.
	// Rejoin undoes it.
	Isolate(ctx context.Context, i int) error
	Rejoin(ctx context.Context, i int) error
	// Holds asks node i which of the bodies it stores.
	Holds(ctx context.Context, i int, ids []blob.ID) ([]bool, error)
}

// OutsideWorld is a Target whose nodes send mail for other domains to one
// sink (the MX of every outside domain) that the runner can read.
type OutsideWorld interface {
	// Arrivals returns every message the sink stored, in the order it
	// stored them.
	Arrivals(ctx context.Context) (Arrivals, error)
}

// Arrivals is what the outside sink stored.
type Arrivals struct {
	Messages []Arrival
	// Overlapped lists the recipients two transactions ever held at once.
	Overlapped []string
}

// Arrival is one message the sink answered 250 to.
type Arrival struct {
	N        int
	To       []string
	Received time.Time
	Data     []byte // as received: the node's header fields, then the message
}

// nodeName is the ID of node i.
func nodeName(i int) string { return fmt.Sprintf("node%d", i+1) }

// admin talks to the nodes' HTTP API.
type admin struct {
	t    Target
	http *http.Client
}

func newAdmin(t Target) *admin {
	return &admin{t: t, http: &http.Client{Timeout: 10 * time.Second}}
}

// client is node i's operations API.
func (a *admin) client(i int) *api.Client {
	return &api.Client{BaseURL: "http://" + a.t.HTTPAddr(i), Token: a.t.AdminToken(), HTTP: a.http}
}

// status is node i's GET /api/status.
func (a *admin) status(ctx context.Context, i int) (api.ClusterStatus, error) {
	st, err := a.client(i).Status(ctx)
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", nodeName(i), err)
	}
	return st, nil
}

// ready reports whether node i answers /readyz with 200.
func (a *admin) ready(ctx context.Context, i int) bool {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+a.t.HTTPAddr(i)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// leader asks the nodes in turn until one reports its own Raft state as
// leader; -1 if none does.
func (a *admin) leader(ctx context.Context, among []int) int {
	for _, i := range among {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := a.status(sctx, i)
		cancel()
		if err != nil || st.Leader == "" {
			continue
		}
		for _, m := range st.Members {
			if m.ID == st.Leader && m.State == "Leader" {
				for _, j := range among {
					if nodeName(j) == st.Leader {
						return j
					}
				}
			}
		}
	}
	return -1
}

// healthy reports whether every node is ready, all agree on one leader,
// and the leader sees every node as a live voter.
func (a *admin) healthy(ctx context.Context) (bool, string) {
	n := a.t.Nodes()
	leader := ""
	for i := range n {
		if !a.ready(ctx, i) {
			return false, nodeName(i) + " not ready"
		}
		st, err := a.status(ctx, i)
		if err != nil {
			return false, err.Error()
		}
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return false, fmt.Sprintf("%s sees leader %q, others %q", nodeName(i), st.Leader, leader)
		}
		leader = st.Leader
		if st.Node != st.Leader {
			continue
		}
		voters := 0
		for _, m := range st.Members {
			if m.Suffrage == "voter" && m.Gossip == "alive" && m.Error == "" {
				voters++
			}
		}
		if voters != n || len(st.Members) != n {
			return false, fmt.Sprintf("leader %s sees %d live voters of %d members", st.Leader, voters, len(st.Members))
		}
	}
	return true, ""
}

// waitHealthy polls until the cluster is healthy or the deadline passes,
// and returns how long that took and the last reason it was not.
func (a *admin) waitHealthy(ctx context.Context, within time.Duration) (time.Duration, string, error) {
	start := time.Now()
	deadline := start.Add(within)
	why := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, w := a.healthy(cctx)
		cancel()
		if ok {
			return time.Since(start), why, nil
		}
		why = w
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start), why, fmt.Errorf("cluster not healthy after %s: %s", within, why)
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return time.Since(start), why, err
		}
	}
}

// pause waits d or until ctx ends: the polling interval of the runner's
// deadline loops, never a fixed wait for something to happen.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// setup creates the chaos domain and the accounts through node 0's admin API.
func (a *admin) setup(ctx context.Context, users []account) error {
	c := a.client(0)
	if err := c.AddDomain(ctx, api.DomainRequest{Name: Domain}); err != nil {
		return fmt.Errorf("add domain %s on %s: %w", Domain, nodeName(0), err)
	}
	for _, u := range users {
		if _, err := c.AddUser(ctx, api.UserRequest{Address: u.Address, Password: u.Password}); err != nil {
			return fmt.Errorf("add user %s on %s: %w", u.Address, nodeName(0), err)
		}
	}
	return nil
}

// account is one mail account the workload uses.
type account struct {
	Address  string
	Password string
}

// describe is a one-line picture of every node's Raft state, for reports.
func (a *admin) describe(ctx context.Context) string {
	var parts []string
	for i := range a.t.Nodes() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := a.status(sctx, i)
		cancel()
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", nodeName(i), err))
			continue
		}
		for _, m := range st.Members {
			if m.ID == st.Node {
				parts = append(parts, fmt.Sprintf("%s %s term %d commit %d applied %d leader %q ready %v",
					m.ID, m.State, m.Term, m.CommitIndex, m.AppliedIndex, st.Leader, a.ready(ctx, i)))
			}
		}
	}
	return strings.Join(parts, "; ")
}
