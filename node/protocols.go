package node

import (
	"errors"
	"fmt"
	"net"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/imap"
	"github.com/mailcluster/mailcluster/protocol/pop3"
	"github.com/mailcluster/mailcluster/protocol/smtp"
)

// Client endpoint names, as in the gossip record, status and cluster.json.
const (
	EndpointSMTP        = "smtp"
	EndpointSubmission  = "submission"
	EndpointSubmissions = "submissions"
	EndpointIMAP        = "imap"
	EndpointIMAPS       = "imaps"
	EndpointPOP3        = "pop3"
	EndpointPOP3S       = "pop3s"
)

// clientListeners are the open client ports by endpoint name.
type clientListeners map[string]net.Listener

// openClientListeners binds every configured client port before anything
// serves, so a port in use stops Start with one clear line.
func (n *Node) openClientListeners() (clientListeners, error) {
	want := []struct {
		name, addr string
		tls        bool
	}{
		{EndpointSMTP, n.cfg.SMTPAddr, false},
		{EndpointSubmission, n.cfg.SubmissionAddr, false},
		{EndpointSubmissions, n.cfg.SubmissionsAddr, true},
		{EndpointIMAP, n.cfg.IMAPAddr, false},
		{EndpointIMAPS, n.cfg.IMAPSAddr, true},
		{EndpointPOP3, n.cfg.POP3Addr, false},
		{EndpointPOP3S, n.cfg.POP3SAddr, true},
	}
	out := make(clientListeners)
	for _, w := range want {
		if w.addr == "" {
			continue
		}
		if w.tls && n.cfg.TLS == nil {
			out.close()
			return nil, fmt.Errorf("%s_addr is set but no TLS certificate is configured (tls_cert, tls_key)", w.name)
		}
		ln, err := net.Listen("tcp", w.addr)
		if err != nil {
			out.close()
			return nil, fmt.Errorf("%s_addr %s: %w", w.name, w.addr, err)
		}
		out[w.name] = ln
	}
	return out, nil
}

func (ls clientListeners) close() {
	for _, ln := range ls {
		_ = ln.Close()
	}
}

// protocolServers are the running client protocol servers.
type protocolServers struct {
	smtp *smtp.Server
	imap *imap.Server
	pop3 *pop3.Server
}

// startProtocols builds the servers and serves every open client port.
func (n *Node) startProtocols(ls clientListeners) error {
	limiter := auth.NewLimiter(n.cfg.AuthLimits)
	reg := n.metrics.registry
	var err error
	if n.protocols.smtp, err = smtp.NewServer(smtp.Config{
		Store: n.store, Hostname: n.cfg.Hostname, TLS: n.cfg.TLS, Limiter: limiter,
		Logger: n.log.With("proto", "smtp"), Metrics: reg, Options: n.cfg.SMTP,
	}); err != nil {
		return err
	}
	if n.protocols.imap, err = imap.NewServer(imap.Config{
		Store: n.store, Hostname: n.cfg.Hostname, TLS: n.cfg.TLS, Limiter: limiter,
		Logger: n.log.With("proto", "imap"), Metrics: reg, Options: n.cfg.IMAP,
	}); err != nil {
		return err
	}
	if n.protocols.pop3, err = pop3.NewServer(pop3.Config{
		Store: n.store, Hostname: n.cfg.Hostname, TLS: n.cfg.TLS, Limiter: limiter,
		Logger: n.log.With("proto", "pop3"), Metrics: reg, Options: n.cfg.POP3,
	}); err != nil {
		return err
	}
	serve := map[string]func(net.Listener) error{
		EndpointSMTP:        n.protocols.smtp.ServeMX,
		EndpointSubmission:  n.protocols.smtp.ServeSubmission,
		EndpointSubmissions: n.protocols.smtp.ServeSubmissions,
		EndpointIMAP:        n.protocols.imap.Serve,
		EndpointIMAPS:       n.protocols.imap.ServeTLS,
		EndpointPOP3:        n.protocols.pop3.Serve,
		EndpointPOP3S:       n.protocols.pop3.ServeTLS,
	}
	for name, ln := range ls {
		n.services[name] = n.advertised(ln.Addr())
		n.endpoints[name] = ln.Addr().String()
		fn, ln, name := serve[name], ln, name
		n.goLoop(func() {
			if err := fn(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				n.log.Error("client listener stopped", "endpoint", name, "err", err)
			}
		})
	}
	return nil
}

// stopProtocols closes every client listener and session.
func (n *Node) stopProtocols() {
	for _, s := range []interface{ Close() error }{n.protocols.smtp, n.protocols.imap, n.protocols.pop3} {
		if s != nil {
			_ = s.Close()
		}
	}
}

// Endpoint returns the bound address of a client endpoint ("" if off).
func (n *Node) Endpoint(name string) string { return n.endpoints[name] }
