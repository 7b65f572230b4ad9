package scale

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsPage is one scrape of the hub's /metrics.
type metricsPage map[string]*dto.MetricFamily

func scrapeMetrics(ctx context.Context, base string) (metricsPage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// hist is a histogram's cumulative buckets.
type hist struct {
	bounds []float64
	counts []float64
	count  float64
}

func (p metricsPage) histogram(name string) hist {
	f := p[name]
	if f == nil || len(f.Metric) == 0 || f.Metric[0].Histogram == nil {
		return hist{}
	}
	h := f.Metric[0].Histogram
	var out hist
	for _, b := range h.Bucket {
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount()))
	}
	out.count = float64(h.GetSampleCount())
	return out
}

// minus is the histogram of the observations made between o and h.
func (h hist) minus(o hist) hist {
	if len(o.bounds) != len(h.bounds) {
		return h
	}
	out := hist{bounds: h.bounds, counts: slices.Clone(h.counts), count: h.count - o.count}
	for i := range out.counts {
		out.counts[i] -= o.counts[i]
	}
	return out
}

// quantile estimates a quantile the way Prometheus' histogram_quantile
// does: linear within the bucket it falls in.
func (h hist) quantile(q float64) time.Duration {
	if h.count <= 0 {
		return 0
	}
	rank := q * h.count
	lower, prev := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			upper := h.bounds[i]
			if math.IsInf(upper, 1) {
				upper = lower
			}
			frac := 1.0
			if c > prev {
				frac = (rank - prev) / (c - prev)
			}
			return time.Duration((lower + (upper-lower)*frac) * float64(time.Second))
		}
		lower, prev = h.bounds[i], c
	}
	return time.Duration(lower * float64(time.Second))
}
