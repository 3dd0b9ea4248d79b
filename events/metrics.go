package events

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type logMetrics struct {
	published *prometheus.CounterVec
	latency   prometheus.Histogram
}

func newLogMetrics(reg prometheus.Registerer, l *Log) (*logMetrics, error) {
	m := &logMetrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_events_published_total",
			Help: "Events appended to the node's event log, by result.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_event_publish_duration_seconds",
			Help:    "Time from publish to JetStream acknowledgement.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
	}
	stream := &streamCollector{log: l,
		msgs:  prometheus.NewDesc("outpost_event_log_messages", "Messages in the node's event log.", nil, nil),
		bytes: prometheus.NewDesc("outpost_event_log_bytes", "Bytes in the node's event log.", nil, nil),
	}
	for _, c := range []prometheus.Collector{m.published, m.latency, stream} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *logMetrics) observePublish(d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.published.WithLabelValues(result).Inc()
	m.latency.Observe(d.Seconds())
}

// streamCollector reads the stream's size at scrape time.
type streamCollector struct {
	log         *Log
	msgs, bytes *prometheus.Desc
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.msgs; ch <- c.bytes }

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.log.Stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.msgs, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
}
