package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"
)

// median of xs; xs is not modified.
func median[T ~int64 | ~float64](xs []T) T {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// medianOf is the median over rounds of one measurement of each round.
func medianOf[R any, T ~int64 | ~float64](rounds []R, f func(R) T) T {
	xs := make([]T, len(rounds))
	for i, r := range rounds {
		xs[i] = f(r)
	}
	return median(xs)
}

// rate is work per second, e.g. MiB/s.
func rate(work float64, d time.Duration) float64 { return work / d.Seconds() }

// newTable is the tabwriter every table is printed with.
func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
}

// goalMark flags a ratio below its goal.
func goalMark(ok bool) string {
	if ok {
		return "ok"
	}
	return "BELOW GOAL"
}

// poll calls check at once and then every interval until it reports done, fails, or
// timeout passes; timeout's error includes check's last word on what is missing.
func poll(parent context.Context, interval, timeout time.Duration, check func(context.Context) (done bool, missing string, err error)) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		done, missing, err := check(ctx)
		switch {
		case parent.Err() != nil:
			return parent.Err()
		case err != nil && ctx.Err() == nil:
			return err
		case done:
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if parent.Err() != nil {
				return parent.Err()
			}
			return fmt.Errorf("not within %s (%s)", timeout, missing)
		}
	}
}
