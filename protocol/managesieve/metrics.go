package managesieve

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. They exist even when
// Config.Metrics is nil (then nobody scrapes them).
type metrics struct {
	connections prometheus.Counter
	rejected    *prometheus.CounterVec // reason
	active      prometheus.Gauge
	commands    *prometheus.CounterVec // command, result
	logins      *prometheus.CounterVec // result
}

// commandLabel bounds the command label's values to the keywords.
func commandLabel(name string) string {
	switch name {
	case "AUTHENTICATE", "STARTTLS", "LOGOUT", "CAPABILITY", "HAVESPACE", "PUTSCRIPT", "LISTSCRIPTS",
		"SETACTIVE", "GETSCRIPT", "DELETESCRIPT", "RENAMESCRIPT", "CHECKSCRIPT", "NOOP", "UNAUTHENTICATE":
		return name
	}
	return "other"
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailcluster_managesieve_connections_total",
			Help: "ManageSieve connections accepted.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_managesieve_connections_rejected_total",
			Help: "ManageSieve connections refused at connect, by reason (max_connections, max_connections_per_ip).",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailcluster_managesieve_sessions_active",
			Help: "ManageSieve sessions open now.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_managesieve_commands_total",
			Help: "ManageSieve commands answered, by command and result (ok, no).",
		}, []string{"command", "result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_managesieve_logins_total",
			Help: "ManageSieve login attempts, by result (ok, failed, throttled, unavailable).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.connections = register(reg, m.connections, &err)
	m.rejected = register(reg, m.rejected, &err)
	m.active = register(reg, m.active, &err)
	m.commands = register(reg, m.commands, &err)
	m.logins = register(reg, m.logins, &err)
	return m, err
}

// register registers c, or returns the equal collector already registered
// (a second server on one registry shares the first one's counters). The
// first failure is kept in *errp.
func register[T prometheus.Collector](reg prometheus.Registerer, c T, errp *error) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}
