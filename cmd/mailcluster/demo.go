package main

import (
	"context"
	"net/http"
	"time"
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
	if err := c.do(ctx, "POST", "/api/domains", map[string]string{"name": info.Domain}, nil); err != nil {
		return err
	}
	return c.do(ctx, "POST", "/api/users", map[string]any{"address": info.DemoUser, "password": info.DemoPassword}, nil)
}
