package inbound

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts verdicts, by check and result.
type Metrics struct {
	verdicts *prometheus.CounterVec
}

// NewMetrics registers the verdict counters on reg (nil: not exported).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "mailcluster", Name: "inbound_verdicts_total",
		Help: "Verdicts on arriving mail, by check (spf, dkim, dmarc, iprev, dnsbl, greylist, spam, sieve) and result.",
	}, []string{"check", "result"})}
	if reg != nil {
		if err := reg.Register(m.verdicts); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Count adds one verdict.
func (m *Metrics) Count(check, result string) {
	if m != nil {
		m.verdicts.WithLabelValues(check, result).Inc()
	}
}
