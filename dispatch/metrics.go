package dispatch

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// maxDomainLabels bounds the destination label's values: the first
// domains seen get their own, the rest share "other".
const maxDomainLabels = 50

type metrics struct {
	attempts *prometheus.CounterVec
	dsns     *prometheus.CounterVec

	mu      sync.Mutex
	domains map[string]bool
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Name: "outbound_attempts_total",
			Help: "Outbound delivery attempts per recipient by result (delivered, deferred, failed) and destination domain (the first 50 seen; the rest \"other\").",
		}, []string{"result", "domain"}),
		dsns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailcluster", Name: "outbound_dsn_total",
			Help: "Delivery status notifications created by kind (failed, delayed).",
		}, []string{"kind"}),
		domains: map[string]bool{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.attempts, m.dsns} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) attempt(result, domain string) {
	m.mu.Lock()
	if !m.domains[domain] {
		if len(m.domains) < maxDomainLabels {
			m.domains[domain] = true
		} else {
			domain = "other"
		}
	}
	m.mu.Unlock()
	m.attempts.WithLabelValues(result, domain).Inc()
}

func (m *metrics) dsn(kind string) { m.dsns.WithLabelValues(kind).Inc() }
