package main

import (
	"context"
	"net/http"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

func devHTTP() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// setupDemo creates the demo domain and account through the admin API of
// the first node that answers.
func setupDemo(ctx context.Context, info *clusterInfo) error {
	var c *adminClient
	for _, n := range info.Nodes {
		if reachable(n.HTTP) {
			c = &adminClient{addr: n.HTTP, token: info.AdminToken, http: devHTTP()}
			break
		}
	}
	if c == nil {
		return errNoNodeAnswers
	}
	info.DemoUser = "demo@" + info.Domain
	info.DemoPassword = randomToken(12)
	if err := c.api().AddDomain(ctx, api.DomainRequest{Name: info.Domain}); err != nil {
		return c.reached(err)
	}
	_, err := c.api().AddUser(ctx, api.UserRequest{Address: info.DemoUser, Password: info.DemoPassword})
	return c.reached(err)
}
