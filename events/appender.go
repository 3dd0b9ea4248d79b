package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// appendWindow is how many appends an Appender has in flight at once.
const appendWindow = 256

// appendTimeout bounds the wait for one append's acknowledgement.
const appendTimeout = 30 * time.Second

// Appender appends one event to many outboxes with the publishes pipelined: a node
// routes each event to every child in scope, and waiting for each outbox's
// acknowledgement before the next append made the last child's copy wait for a
// round trip per child before it (a second at a root of 1,000 children).
type Appender struct {
	js jetstream.JetStream
}

// NewAppender makes an Appender over nc: one JetStream context, so one reply
// subscription for every outbox's acknowledgements.
func NewAppender(nc *nats.Conn) (*Appender, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*appendWindow),
		jetstream.WithPublishAsyncTimeout(appendTimeout))
	if err != nil {
		return nil, fmt.Errorf("appender: %w", err)
	}
	return &Appender{js: js}, nil
}

// AppendTarget is one outbox to append to, with the append's dedupe key (see
// Outbox.Append).
type AppendTarget struct {
	Outbox *Outbox
	Key    string
}

// Append appends e to every target and returns once every append is durable, or
// with the first that failed (the caller retries them all: the keys make an append
// already done a duplicate the outbox drops).
func (a *Appender) Append(ctx context.Context, e *Event, targets []AppendTarget) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	type pending struct {
		f      jetstream.PubAckFuture
		outbox string
	}
	var inflight []pending
	wait := func(p pending) error {
		select {
		case <-p.f.Ok():
			return nil
		case err := <-p.f.Err():
			return fmt.Errorf("append %s to outbox %s: %w", e.ID, p.outbox, err)
		case <-ctx.Done():
			return fmt.Errorf("append %s to outbox %s: %w", e.ID, p.outbox, ctx.Err())
		}
	}
	for _, t := range targets {
		if len(inflight) == appendWindow {
			if err := wait(inflight[0]); err != nil {
				return err
			}
			inflight = inflight[1:]
		}
		subject, opts := t.Outbox.publishArgs(t.Key)
		f, err := a.js.PublishAsync(subject, data, opts...)
		if err != nil {
			return fmt.Errorf("append %s to outbox %s: %w", e.ID, t.Outbox.name, err)
		}
		inflight = append(inflight, pending{f: f, outbox: t.Outbox.name})
	}
	for _, p := range inflight {
		if err := wait(p); err != nil {
			return err
		}
	}
	return nil
}
