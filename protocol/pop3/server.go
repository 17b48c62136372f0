package pop3

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
)

// Options are the limits and settings an administrator can change.
type Options struct{}

// Config is what the node hands the server.
type Config struct {
	Store    *replication.Store
	Hostname string
	TLS      *tls.Config // nil: no STLS/STARTTLS, no implicit-TLS port
	Limiter  *auth.Limiter
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	Options  Options
}

// Server serves the protocol.
type Server struct{}

// NewServer builds the server.
func NewServer(cfg Config) (*Server, error) { return &Server{}, nil }

var errTODO = errors.New("pop3: not built yet")

// Serve serves plain connections that may upgrade with STARTTLS/STLS.
func (s *Server) Serve(ln net.Listener) error { return errTODO }

// ServeTLS serves implicit-TLS connections.
func (s *Server) ServeTLS(ln net.Listener) error { return errTODO }

// Close stops every listener and session.
func (s *Server) Close() error { return nil }
