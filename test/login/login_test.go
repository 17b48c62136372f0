package login_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/imap"
	"github.com/mailcluster/mailcluster/protocol/pop3"
	"github.com/mailcluster/mailcluster/protocol/smtp"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	user     = "alice@" + domain
	password = "correct horse battery staple"
	wait     = 30 * time.Second
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts nodes with room for many connections from loopback
// and the given login limits, with the test domain and user.
func newCluster(t *testing.T, nodes int, limits auth.LimiterOptions, change func(*node.Config)) *cluster.Cluster {
	t.Helper()
	c := cluster.New(t, cluster.Options{Nodes: nodes, Configure: func(_ int, cfg *node.Config) {
		cfg.AuthLimits = limits
		cfg.SMTP = smtp.Options{MaxConnectionsPerIP: 500}
		cfg.IMAP = imap.Options{MaxConnectionsPerIP: 500}
		cfg.POP3 = pop3.Options{MaxConnectionsPerIP: 500}
		if change != nil {
			change(cfg)
		}
	}})
	cluster.RetryIdempotent(t, "add domain", func() error {
		err := c.Node(c.Leader()).Store().AddDomain(ctxT(t), domain)
		if errors.Is(err, replication.ErrDomainExists) {
			return nil
		}
		return err
	})
	cluster.RetryIdempotent(t, "add user", func() error {
		_, err := c.Node(c.Leader()).Store().AddUser(ctxT(t), replication.NewUser{Address: user, Password: password})
		if errors.Is(err, replication.ErrAccountExists) {
			return nil
		}
		return err
	})
	// Every node must know the account before logins mean anything.
	for i := range nodes {
		c.WaitFor("account known on node "+strconv.Itoa(i), func() bool {
			_, err := c.Node(i).Store().Authenticate(ctxT(t), user, password)
			return err == nil
		})
	}
	return c
}

// outcome of one login attempt, as the client sees it.
type outcome int

const (
	loggedIn  outcome = iota
	wrong             // wrong user name or password
	throttled         // refused unchecked: too many failed logins, or too many being checked, from this address
	other
)

func (o outcome) String() string {
	return [...]string{"logged in", "wrong password", "throttled", "other"}[o]
}

// A protocol logs in once on a fresh connection and says how it went.
type protocol struct {
	name     string
	endpoint string
	login    func(t *testing.T, addr, user, pass string) (outcome, string)
}

var protocols = []protocol{
	{"imap", node.EndpointIMAP, imapLogin},
	{"smtp", node.EndpointSubmission, smtpLogin},
	{"pop3", node.EndpointPOP3, pop3Login},
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		return nil, nil
	}
	_ = c.SetDeadline(time.Now().Add(wait))
	return c, bufio.NewReader(c)
}

func line(r *bufio.Reader) string {
	l, _ := r.ReadString('\n')
	return strings.TrimRight(l, "\r\n")
}

func imapLogin(t *testing.T, addr, user, pass string) (outcome, string) {
	c, r := dial(t, addr)
	if c == nil {
		return other, "no connection"
	}
	defer c.Close()
	line(r) // greeting
	fmt.Fprintf(c, "a LOGIN %q %q\r\n", user, pass)
	for {
		l := line(r)
		switch {
		case l == "":
			return other, "connection closed"
		case strings.HasPrefix(l, "a OK"):
			return loggedIn, l
		case strings.HasPrefix(l, "a NO [AUTHENTICATIONFAILED]"):
			return wrong, l
		case strings.HasPrefix(l, "a NO [UNAVAILABLE] Too many failed logins"),
			strings.HasPrefix(l, "a NO [UNAVAILABLE] Too many logins being checked"):
			return throttled, l
		case strings.HasPrefix(l, "a "):
			return other, l
		}
	}
}

func smtpLogin(t *testing.T, addr, user, pass string) (outcome, string) {
	c, r := dial(t, addr)
	if c == nil {
		return other, "no connection"
	}
	defer c.Close()
	reply := func() string {
		for {
			l := line(r)
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	reply() // greeting
	fmt.Fprintf(c, "EHLO client.test\r\n")
	reply()
	fmt.Fprintf(c, "AUTH PLAIN %s\r\n", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	l := reply()
	switch {
	case strings.HasPrefix(l, "235"):
		return loggedIn, l
	case strings.HasPrefix(l, "535"):
		return wrong, l
	case strings.HasPrefix(l, "454") && (strings.Contains(l, "Too many failed logins") || strings.Contains(l, "Too many logins being checked")):
		return throttled, l
	}
	return other, l
}

func pop3Login(t *testing.T, addr, user, pass string) (outcome, string) {
	c, r := dial(t, addr)
	if c == nil {
		return other, "no connection"
	}
	defer c.Close()
	line(r) // greeting
	fmt.Fprintf(c, "USER %s\r\n", user)
	line(r)
	fmt.Fprintf(c, "PASS %s\r\n", pass)
	l := line(r)
	switch {
	case strings.HasPrefix(l, "+OK"):
		return loggedIn, l
	case strings.HasPrefix(l, "-ERR [AUTH]"):
		return wrong, l
	case strings.HasPrefix(l, "-ERR [SYS/TEMP] too many failed logins"),
		strings.HasPrefix(l, "-ERR [SYS/TEMP] too many logins being checked"):
		return throttled, l
	}
	return other, l
}

// metric reads one unlabelled sample from a node's /metrics.
func metric(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// 100 parallel wrong-password logins from one address: only as many
// passwords are hashed as the address has attempts (the rest were
// checked at once, each argon2id costing 19 MiB, and one node grew by
// almost 2 GB); every other attempt is refused as throttled.
func TestParallelBadLoginsHashAtMostTheLimit(t *testing.T) {
	const parallel, limit = 100, 10
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := newCluster(t, 1, auth.LimiterOptions{IPFailures: limit, FailDelay: 200 * time.Millisecond, Block: time.Hour, CheckWait: 2 * wait}, nil)
			n := c.Node(0)
			before := metric(t, n, "mailcluster_auth_password_checks_total")
			addr := n.Endpoint(p.endpoint)
			var (
				mu     sync.Mutex
				counts = map[outcome]int{}
				odd    []string
				wg     sync.WaitGroup
				start  = make(chan struct{})
			)
			for range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					o, l := p.login(t, addr, user, "wrong password")
					mu.Lock()
					counts[o]++
					if o == other || o == loggedIn {
						odd = append(odd, l)
					}
					mu.Unlock()
				}()
			}
			close(start)
			wg.Wait()
			hashed := metric(t, n, "mailcluster_auth_password_checks_total") - before
			t.Logf("%s: %v; %v passwords hashed", p.name, counts, hashed)
			if len(odd) > 0 {
				t.Fatalf("unexpected replies: %q", odd)
			}
			if hashed > limit {
				t.Errorf("%v passwords hashed for %d parallel bad logins; want at most %d", hashed, parallel, limit)
			}
			if counts[wrong] > limit || counts[throttled] < parallel-limit {
				t.Errorf("outcomes %v: want at most %d wrong-password replies and the rest throttled", counts, limit)
			}
		})
	}
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, cfg)
}
