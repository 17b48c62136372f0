package pop3

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. They exist even when
// Config.Metrics is nil (then nobody scrapes them).
type metrics struct {
	connections *prometheus.CounterVec // endpoint
	rejected    *prometheus.CounterVec // reason
	active      prometheus.Gauge
	commands    *prometheus.CounterVec // command, result
	duration    *prometheus.HistogramVec
	logins      *prometheus.CounterVec // result
	sentOctets  prometheus.Counter
	deleted     prometheus.Counter
	updates     *prometheus.CounterVec // result
}

// commandLabel bounds the command label's values to the POP3 keywords.
func commandLabel(name string) string {
	switch name {
	case "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "STAT", "LIST", "RETR",
		"DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL":
		return name
	}
	return "other"
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_pop3_connections_total",
			Help: "POP3 connections accepted, by endpoint (pop3, pop3s).",
		}, []string{"endpoint"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_pop3_connections_rejected_total",
			Help: "POP3 connections refused at connect, by reason (max_connections, max_connections_per_ip).",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailcluster_pop3_sessions_active",
			Help: "POP3 sessions open now.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_pop3_commands_total",
			Help: "POP3 commands answered, by command and result (ok, err).",
		}, []string{"command", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailcluster_pop3_command_duration_seconds",
			Help:    "Time to answer a POP3 command, by command (RETR and TOP include sending the message).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"command"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_pop3_logins_total",
			Help: "POP3 login attempts, by result (ok, failed, throttled, unavailable).",
		}, []string{"result"}),
		sentOctets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailcluster_pop3_message_octets_sent_total",
			Help: "Message octets sent by RETR and TOP (wire form, before dot-stuffing).",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailcluster_pop3_messages_deleted_total",
			Help: "Messages deleted by QUIT in the UPDATE state (committed).",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailcluster_pop3_updates_total",
			Help: "UPDATE states that had messages to delete, by result (ok, unavailable, error).",
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
	m.duration = register(reg, m.duration, &err)
	m.logins = register(reg, m.logins, &err)
	m.sentOctets = register(reg, m.sentOctets, &err)
	m.deleted = register(reg, m.deleted, &err)
	m.updates = register(reg, m.updates, &err)
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
