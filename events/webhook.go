package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Webhook notifications (package notify) keep their state here: the definitions in
// a bucket, one outbox per webhook fed by one durable consumer on the event log.
const (
	// BucketWebhooks holds webhook definitions: all at the root, those a node
	// delivers (and relays to its subtree) elsewhere.
	BucketWebhooks = "OUTPOST_WEBHOOKS"
	webhookPrefix  = "HOOK_"
	// NotifyConsumer is the event log's durable consumer that feeds the webhooks'
	// outboxes.
	NotifyConsumer = "notify"
)

// EventSubjects matches every event of a node's log, in the EVENTS stream: one
// subject per action, outpost.events.<action> (push, tag-delete, manifest-delete,
// repository-delete), the body an Event in JSON, the header Nats-Msg-Id its id. A
// consumer inside the node's NATS reads it with its own durable consumer on
// EVENTS (explicit ack), and drops repeats by the id: see docs/architecture.md,
// "Notifications".
const EventSubjects = subjectPrefix + ">"

// EventSubject is the subject of one action's events.
func EventSubject(a Action) string { return subjectPrefix + string(a) }

// WebhookOutbox names the outbox of one webhook at this node.
func WebhookOutbox(webhook string) string { return webhookPrefix + webhook }

// WebhookOfOutbox reads the webhook name back from an outbox name.
func WebhookOfOutbox(outbox string) (string, bool) {
	if len(outbox) <= len(webhookPrefix) || outbox[:len(webhookPrefix)] != webhookPrefix {
		return "", false
	}
	return outbox[len(webhookPrefix):], true
}

// ConsumeFromNow returns a queue over the event log for a durable consumer that,
// when it is first made, starts with the events published after it: a webhook
// defined today is not told of last month's pushes. Once made, it keeps its place
// across restarts.
func (l *Log) ConsumeFromNow(ctx context.Context, durable string) (*Queue, error) {
	cons, err := l.stream.Consumer(ctx, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: AckWait, MaxAckPending: 1,
			DeliverPolicy: jetstream.DeliverNewPolicy,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("event log consumer %s: %w", durable, err)
	}
	return &Queue{js: l.js, stream: StreamName, cons: cons}, nil
}

// ListWebhookOutboxes names the webhook outboxes this node's NATS holds, so that
// those of deleted webhooks can be removed.
func ListWebhookOutboxes(ctx context.Context, nc *nats.Conn) ([]string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("list webhook outboxes: %w", err)
	}
	var out []string
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		if _, ok := WebhookOfOutbox(n); ok {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list webhook outboxes: %w", err)
	}
	return out, nil
}
