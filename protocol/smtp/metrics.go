package smtp

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series, all named mailcluster_smtp_*.
// Labels: listener is mx, submission or submissions; stage is where a
// refusal happened (session, auth, mail, rcpt, data); reason is the refusal
// kind (no_such_user, relay_denied, no_quorum, bare_lf, …).
type metrics struct {
	accepted    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	ack         *prometheus.HistogramVec
	connections *prometheus.GaugeVec
	connRefused *prometheus.CounterVec
	auth        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "messages_accepted_total",
			Help: "Messages answered 250 after DATA/BDAT: durable on W replicas and committed.",
		}, []string{"listener"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "rejected_total",
			Help: "Refused commands and messages, by stage and reason.",
		}, []string{"listener", "stage", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "received_bytes_total",
			Help: "Bytes of accepted messages, trace headers included.",
		}, []string{"listener"}),
		ack: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "ack_latency_seconds",
			Help:    "Time from the last byte of a message to its 250 (replication and commit).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"listener"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "connections",
			Help: "Open SMTP connections.",
		}, []string{"listener"}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "connections_refused_total",
			Help: "Connections refused at accept because a connection limit was reached.",
		}, []string{"listener", "limit"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Subsystem: "smtp", Name: "auth_total",
			Help: "AUTH attempts by result (ok, failed, throttled, error).",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.accepted, m.rejected, m.bytes, m.ack, m.connections, m.connRefused, m.auth} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
