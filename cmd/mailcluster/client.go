package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

// adminClient talks to one node's admin API.
type adminClient struct {
	addr  string // host:port or URL of the node's HTTP endpoint
	token string
	http  *http.Client
}

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	addr, token, dev string
	json             bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "addr", "", "node HTTP address host:port [MAILCLUSTER_ADDR]")
	fs.StringVar(&a.token, "token", "", "admin token [MAILCLUSTER_TOKEN]")
	fs.StringVar(&a.dev, "dev", "", "a dev cluster's folder: read the address and token from its cluster.json")
	fs.BoolVar(&a.json, "json", false, "print JSON instead of a table")
}

// client resolves the node to talk to: flags, then the environment, then a
// dev cluster's cluster.json (the first node that answers).
func (a *adminFlags) client() (*adminClient, error) {
	c := &adminClient{addr: a.addr, token: a.token, http: &http.Client{Timeout: 40 * time.Second}}
	if c.addr == "" {
		c.addr = os.Getenv("MAILCLUSTER_ADDR")
	}
	if c.token == "" {
		c.token = os.Getenv("MAILCLUSTER_TOKEN")
	}
	if a.dev != "" {
		info, err := readClusterInfo(a.dev)
		if err != nil {
			return nil, err
		}
		if c.token == "" {
			c.token = info.AdminToken
		}
		if c.addr == "" {
			for _, n := range info.Nodes {
				if reachable(n.HTTP) {
					c.addr = n.HTTP
					break
				}
			}
			if c.addr == "" {
				return nil, fmt.Errorf("no node of the dev cluster in %s answers", a.dev)
			}
		}
	}
	if c.addr == "" {
		return nil, errors.New("which node? give --addr (or MAILCLUSTER_ADDR) or --dev DIR")
	}
	return c, nil
}

func reachable(addr string) bool {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// api is the typed client of the node's operations API.
func (c *adminClient) api() *api.Client {
	base := c.addr
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = "http://" + base
	}
	return &api.Client{BaseURL: base, Token: c.token, HTTP: c.http}
}

// reached says which node an error came from when a request got no
// answer at all (the node's own refusals carry their message).
func (c *adminClient) reached(err error) error {
	var transport *url.Error
	if errors.As(err, &transport) {
		return fmt.Errorf("cannot reach %s: %w", c.addr, err)
	}
	return err
}

// clusterInfo is DIR/cluster.json, written by `mailcluster dev`.
type clusterInfo struct {
	Domain       string `json:"domain"`
	AdminToken   string `json:"admin_token"`
	TLSCert      string `json:"tls_cert,omitempty"` // the dev cluster's self-signed certificate: trust it in clients
	DemoUser     string `json:"demo_user,omitempty"`
	DemoPassword string `json:"demo_password,omitempty"`
	// The dev cluster's outside world (simnet): the DNS every node resolves
	// through, and the SMTP sink every outside domain's MX leads to, which
	// saves each message in OutsideDir.
	DNS         string     `json:"dns,omitempty"`
	OutsideSMTP string     `json:"outside_smtp,omitempty"`
	OutsideDir  string     `json:"outside_dir,omitempty"`
	Nodes       []nodeInfo `json:"nodes"`
}

type nodeInfo struct {
	ID         string `json:"id"`
	PID        int    `json:"pid"`
	HTTP       string `json:"http"`
	Gossip     string `json:"gossip"`
	Cluster    string `json:"cluster"`
	Config     string `json:"config"`
	Log        string `json:"log"`
	SMTP       string `json:"smtp,omitempty"`
	Submission string `json:"submission,omitempty"`
	SMTPS      string `json:"submissions,omitempty"`
	IMAP       string `json:"imap,omitempty"`
	IMAPS      string `json:"imaps,omitempty"`
	POP3       string `json:"pop3,omitempty"`
	POP3S      string `json:"pop3s,omitempty"`
	Sieve      string `json:"managesieve,omitempty"`
}

func readClusterInfo(dir string) (clusterInfo, error) {
	var info clusterInfo
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return info, fmt.Errorf("no dev cluster in %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%s: %w", filepath.Join(dir, "cluster.json"), err)
	}
	return info, nil
}
