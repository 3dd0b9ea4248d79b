package notify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a node's webhook metrics; a nil *metrics records nothing.
type metrics struct {
	pendingG    *prometheus.GaugeVec
	deliveries  *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pendingG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_webhook_pending_messages",
			Help: "Events waiting in a webhook's outbox for its receiver."}, []string{"webhook"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_webhook_deliveries_total",
			Help: "Delivery attempts by result: success (2xx), failure (retried), expired (dropped at the webhook's TTL)."},
			[]string{"webhook", "result"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_webhook_last_success_timestamp_seconds",
			Help: "When a webhook's receiver last took a notification (Unix seconds)."}, []string{"webhook"}),
	}
	for _, c := range []prometheus.Collector{m.pendingG, m.deliveries, m.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) pending(name string, n uint64) {
	if m != nil {
		m.pendingG.WithLabelValues(name).Set(float64(n))
	}
}

func (m *metrics) delivery(name, result string) {
	if m != nil {
		m.deliveries.WithLabelValues(name, result).Inc()
	}
}

func (m *metrics) succeeded(name string, t time.Time) {
	if m != nil {
		m.lastSuccess.WithLabelValues(name).Set(float64(t.Unix()))
	}
}

// forget drops the series of a webhook this node no longer delivers.
func (m *metrics) forget(name string) {
	if m != nil {
		m.pendingG.DeleteLabelValues(name)
		m.lastSuccess.DeleteLabelValues(name)
		m.deliveries.DeletePartialMatch(prometheus.Labels{"webhook": name})
	}
}
