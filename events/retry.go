package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RetryableError is a JetStream failure a later attempt may not meet: a timeout,
// no responders, a stream or the cluster between leaders. Any other failure (a bad
// request, a refused permission, a full disk) is returned as it is. Callers tell
// the two apart with errors.As or IsRetryable.
type RetryableError struct {
	// Op is what failed ("publish", "create stream EVENTS").
	Op  string
	Err error
}

func (e *RetryableError) Error() string { return e.Op + ": " + e.Err.Error() + " (retryable)" }
func (e *RetryableError) Unwrap() error { return e.Err }

// IsRetryable reports whether err is, or wraps, a RetryableError.
func IsRetryable(err error) bool {
	var r *RetryableError
	return errors.As(err, &r)
}

// JetStream API error codes a cluster answers while it elects or places.
const (
	jsErrNoPeers          = 10005 // no suitable peers for placement (members not known yet)
	jsErrClusterNotAvail  = 10008 // JetStream system temporarily unavailable
	jsErrClusterNotLeader = 10009 // JetStream cluster can not handle request
	jsErrInsufficient     = 10023 // insufficient resources (peers not known yet)
	jsErrStreamOffline    = 10118 // stream is offline
)

// classify wraps err in a RetryableError when it is transient. ctx is the
// caller's: once it is done nothing is worth retrying.
func classify(ctx context.Context, op string, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if transient(err) {
		return &RetryableError{Op: op, Err: err}
	}
	return err
}

func transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), // the attempt's own deadline
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, errNoLeader),
		errors.Is(err, errCatchingUp),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		// A JetStream API without responders: the meta layer is not up yet.
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrNoPeers, jsErrClusterNotAvail, jsErrClusterNotLeader, jsErrInsufficient, jsErrStreamOffline:
			return true
		}
		return apiErr.Code == 503
	}
	return false
}

// RetryPolicy retries a JetStream call that failed with a RetryableError, with
// backoff, until Timeout has passed. The zero policy makes one attempt.
type RetryPolicy struct {
	// Timeout bounds the attempts in all; 0 makes one attempt.
	Timeout time.Duration
	// Attempt bounds each attempt; default 2 s (a leader change takes 0.5 s after a
	// clean stop, 4 to 6 s after a crash: several attempts fit in the wait).
	Attempt time.Duration
	// Now and After are the clock; default the time package's.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Logger tells of the first retry of a call; nil: slog.Default().
	Logger *slog.Logger
}

const defaultAttempt = 2 * time.Second

// do calls fn until it succeeds, fails for good, or the policy's time is up. fn
// gets a context bounded by one attempt's time.
func (p RetryPolicy) do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if p.Timeout <= 0 {
		return classify(ctx, op, fn(ctx))
	}
	now, after, logger := p.Now, p.After, p.Logger
	if now == nil {
		now = time.Now
	}
	if after == nil {
		after = time.After
	}
	if logger == nil {
		logger = slog.Default()
	}
	attempt := p.Attempt
	if attempt <= 0 {
		attempt = defaultAttempt
	}
	start := now()
	wait := 50 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := classify(ctx, op, fn(actx))
		cancel()
		if err == nil {
			if n > 1 {
				logger.Info("nats: succeeded after retries", "op", op, "attempts", n, "took", now().Sub(start).Round(time.Millisecond))
			}
			return nil
		}
		if !IsRetryable(err) {
			return err
		}
		waited := now().Sub(start)
		if waited >= p.Timeout {
			return fmt.Errorf("gave up after %d attempts in %s: %w", n, waited.Round(time.Millisecond), err)
		}
		if n == 1 {
			logger.Info("nats: retrying (a cluster electing leaders?)", "op", op, "err", err, "for", p.Timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", op, ctx.Err(), err)
		case <-after(min(wait, p.Timeout-waited)):
		}
		wait = min(2*wait, time.Second)
	}
}

// OpenOption changes how OpenOutbox and OpenBucket make their stream.
type OpenOption func(*Placement)

// WithPlacement makes the stream with p's replicas and retries. Default: one copy
// (or the copies the stream has already, never fewer), one attempt.
func WithPlacement(p Placement) OpenOption { return func(dst *Placement) { *dst = p } }

func placementOf(opts []OpenOption) Placement {
	var p Placement
	for _, o := range opts {
		o(&p)
	}
	return p
}

// createStream creates or updates a stream with p's replicas, retrying while a
// cluster elects and places. It never lowers the copies a stream has: a caller
// that names no placement (one that only reads, say) leaves them as they are.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, p Placement) (jetstream.Stream, error) {
	return placeStream(ctx, js, "create stream "+cfg.Name, cfg.Name, p, func(ctx context.Context, replicas int) (jetstream.Stream, error) {
		want := cfg
		want.Replicas = replicas
		return js.CreateOrUpdateStream(ctx, want)
	})
}

// placeStream makes stream name with create, retrying by p's Create policy: with
// p's replicas but never fewer than the stream has, refused in a cluster without a
// placement, and done once the stream has a leader. Streams and buckets alike.
func placeStream(ctx context.Context, js jetstream.JetStream, op, name string, p Placement,
	create func(ctx context.Context, replicas int) (jetstream.Stream, error)) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := p.Create.do(ctx, op, func(ctx context.Context) error {
		replicas, err := existingReplicas(ctx, js, name)
		if err != nil {
			return err
		}
		if err := placementKnown(js, name, p, replicas); err != nil {
			return err
		}
		if st, err = create(ctx, max(p.replicas(), replicas)); err != nil {
			return err
		}
		return hasLeader(ctx, st)
	})
	return st, err
}

// errNoLeader says a replicated stream is made but has not elected its leader:
// until it has, calls to it go unanswered.
var errNoLeader = errors.New("stream has no leader yet")

// hasLeader returns errNoLeader until st has a leader.
func hasLeader(ctx context.Context, st jetstream.Stream) error {
	info, err := st.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Just made: a member that has not applied its assignment yet says so.
		return fmt.Errorf("%s: %w (%v)", st.CachedInfo().Config.Name, errNoLeader, err)
	}
	if err != nil {
		return err
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("%s: %w", info.Config.Name, errNoLeader)
	}
	return nil
}

// ErrNoPlacement says a stream would be made in a cluster by a caller that names no
// placement: it would get one copy, on one member, and stop with it.
var ErrNoPlacement = errors.New("stream made in a cluster without a placement")

// placementKnown refuses to make a stream (existing is 0) in a cluster with no
// placement given: the zero Placement is a single server's.
func placementKnown(js jetstream.JetStream, name string, p Placement, existing int) error {
	if existing > 0 || p.Replicas > 0 || js.Conn().ConnectedClusterName() == "" {
		return nil
	}
	return fmt.Errorf("%w: %s (pass events.WithPlacement(server.Placement()))", ErrNoPlacement, name)
}

// existingReplicas is how many copies a stream has; 0 when there is no such stream.
func existingReplicas(ctx context.Context, js jetstream.JetStream, name string) (int, error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().Config.Replicas, nil
}
