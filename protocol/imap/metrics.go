package imap

import (
	"errors"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series, all prefixed mailcluster_imap_.
// With a nil registerer they are kept but not exported (tests).
type metrics struct {
	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	rejected      prometheus.Counter
	idle          prometheus.Gauge
	logins        *prometheus.CounterVec
	commands      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	panics        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "mailcluster", Subsystem: "imap", Name: name, Help: help}
	}
	m := &metrics{
		sessions:      prometheus.NewGauge(prometheus.GaugeOpts(opts("sessions", "IMAP connections open now."))),
		sessionsTotal: prometheus.NewCounter(prometheus.CounterOpts(opts("sessions_total", "IMAP connections accepted."))),
		rejected: prometheus.NewCounter(prometheus.CounterOpts(opts("rejected_connections_total",
			"IMAP connections refused by max_connections or max_connections_per_ip."))),
		idle: prometheus.NewGauge(prometheus.GaugeOpts(opts("idle_sessions", "IMAP sessions in IDLE now."))),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts(opts("logins_total",
			"IMAP login attempts by result (ok, failed, throttled, unavailable).")), []string{"result"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts(opts("commands_total",
			"IMAP commands by name and result (ok, no, bad, error).")), []string{"command", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mailcluster", Subsystem: "imap", Name: "command_duration_seconds",
			Help:    "Time to answer an IMAP command (IDLE excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"command"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts(opts("session_panics_total",
			"IMAP sessions ended by a recovered panic (a bug)."))),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sessions, m.sessionsTotal, m.rejected, m.idle, m.logins, m.commands, m.duration, m.panics} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// command records one finished command.
func (m *metrics) command(name string, err error, took time.Duration) {
	m.commands.WithLabelValues(name, resultOf(err)).Inc()
	if name != "IDLE" {
		m.duration.WithLabelValues(name).Observe(took.Seconds())
	}
}

func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		switch ie.Type {
		case imap.StatusResponseTypeNo:
			return "no"
		case imap.StatusResponseTypeBad:
			return "bad"
		case imap.StatusResponseTypeBye:
			return "bye"
		}
	}
	return "error"
}
