package smtp

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
)

// Options are the SMTP limits and settings an administrator can change.
type Options struct{}

// Config is what the node hands the SMTP server.
type Config struct {
	Store    *replication.Store
	Hostname string      // name in the banner and Received headers
	TLS      *tls.Config // nil: no STARTTLS, no implicit-TLS port
	Limiter  *auth.Limiter
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	Options  Options
}

// Server serves inbound MX and submission.
type Server struct{}

// NewServer builds the server.
func NewServer(cfg Config) (*Server, error) { return &Server{}, nil }

var errTODO = errors.New("smtp: not built yet")

// ServeMX serves inbound mail (port 25) on ln.
func (s *Server) ServeMX(ln net.Listener) error { return errTODO }

// ServeSubmission serves submission with STARTTLS (port 587) on ln.
func (s *Server) ServeSubmission(ln net.Listener) error { return errTODO }

// ServeSubmissions serves submission over implicit TLS (port 465) on ln.
func (s *Server) ServeSubmissions(ln net.Listener) error { return errTODO }

// Close stops every listener and session.
func (s *Server) Close() error { return nil }
