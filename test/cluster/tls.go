package cluster

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/localcert"
)

// testTLS is a self-signed certificate for localhost and 127.0.0.1, with a
// client config that trusts it.
type testTLS struct {
	server *tls.Config
	client *tls.Config
}

func newTestTLS(t testing.TB) testTLS {
	t.Helper()
	c, err := localcert.New(24 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return testTLS{server: c.ServerConfig(), client: c.ClientConfig()}
}
