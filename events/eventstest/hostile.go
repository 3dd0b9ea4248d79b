// Package eventstest holds test helpers for code that talks to a node's NATS server:
// a hostile client logged in at a gateway with a real credential, and a snapshot
// of everything a node keeps in JetStream, to prove an attempt changed nothing.
package eventstest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/events"
)

// Hostile is a child's connection to its parent's gateway, with the child's real
// sync token, that publishes whatever subject and reply it likes and records what
// the server refused. Its login must be one that may not publish on sentinel.
type Hostile struct {
	NC *nats.Conn

	mu         sync.Mutex
	violations []string
}

// DialHostile logs in at gateway as child's process instance with its sync token.
func DialHostile(gateway, user, password, child, instance string) (*Hostile, error) {
	h := &Hostile{}
	nc, err := events.DialParent(gateway, user, password, child, instance,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			h.mu.Lock()
			h.violations = append(h.violations, err.Error())
			h.mu.Unlock()
		}))
	if err != nil {
		return nil, err
	}
	if !nc.IsConnected() {
		// DialParent retries in the background; a test wants to know now.
		deadline := time.Now().Add(5 * time.Second)
		for !nc.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !nc.IsConnected() {
			nc.Close()
			return nil, fmt.Errorf("%s: not connected to %s (login refused?)", user, gateway)
		}
	}
	h.NC = nc
	return h, nil
}

// Close ends the connection.
func (h *Hostile) Close() { h.NC.Close() }

// sentinel is a subject no child may publish on. Publish sends it after each
// attempt: the server reports refusals in order, so once the sentinel's refusal has
// reached the error handler, the attempt's own (if any) has too.
const sentinel = "outpost.hostile.sentinel"

// Publish sends data on subject with reply (either may be hostile), waits until the
// server has processed it, and returns what the server refused of it ("" when
// nothing), in the server's words.
func (h *Hostile) Publish(subject, reply string, hdr nats.Header, data []byte) (string, error) {
	h.takeViolations()
	m := &nats.Msg{Subject: subject, Reply: reply, Header: hdr, Data: data}
	if err := h.NC.PublishMsg(m); err != nil {
		return "", fmt.Errorf("publish %s reply %q: %w", subject, reply, err)
	}
	return h.waitForSentinel("publish " + subject)
}

// waitForSentinel publishes the sentinel and returns the refusals that came
// before its own.
func (h *Hostile) waitForSentinel(what string) (string, error) {
	if err := h.NC.Publish(sentinel, nil); err != nil {
		return "", fmt.Errorf("publish sentinel: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var got []string
	for {
		for _, v := range h.takeViolations() {
			if strings.Contains(v, `"`+sentinel+`"`) {
				return strings.Join(got, "; "), nil
			}
			got = append(got, v)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("after %s: the server never refused the sentinel %s (is this login unrestricted?)", what, sentinel)
		}
		time.Sleep(time.Millisecond)
	}
}

// Subscribe asks for subject (wildcards welcome) and returns what the server
// refused of it ("" when nothing); a subscription it allowed stays, and every
// message it gets is sent on got.
func (h *Hostile) Subscribe(subject string, got chan *nats.Msg) (string, error) {
	h.takeViolations()
	if _, err := h.NC.ChanSubscribe(subject, got); err != nil {
		return "", fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return h.waitForSentinel("subscribe " + subject)
}

func (h *Hostile) takeViolations() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.violations
	h.violations = nil
	return v
}

// State is what a node's JetStream holds, one line per stream and per consumer:
// message counts, sequences, configuration, consumer positions. KV buckets are
// streams (KV_<bucket>), so a bucket's revision is its stream's last sequence.
type State map[string]string

// Snapshot reads the State over nc (the node's own connection). Consumers named in
// skip ("STREAM/consumer") are left out: their positions move legitimately.
func Snapshot(ctx context.Context, nc *nats.Conn, skip ...string) (State, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	st := State{}
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("stream names: %w", err)
	}
	for _, n := range streams {
		s, err := js.Stream(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", n, err)
		}
		info := s.CachedInfo()
		cfg, _ := json.Marshal(info.Config)
		st["stream "+n] = fmt.Sprintf("msgs=%d bytes=%d first=%d last=%d deleted=%d consumers=%d",
			info.State.Msgs, info.State.Bytes, info.State.FirstSeq, info.State.LastSeq, info.State.NumDeleted,
			info.State.Consumers)
		st["config "+n] = string(cfg)
		cons := s.ListConsumers(ctx)
		for ci := range cons.Info() {
			key := n + "/" + ci.Name
			if skipped[key] {
				continue
			}
			st["consumer "+key] = fmt.Sprintf("pending=%d ack_pending=%d redelivered=%d delivered=%d ack_floor=%d paused=%v",
				ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Delivered.Stream, ci.AckFloor.Stream, ci.Paused)
		}
		if err := cons.Err(); err != nil {
			return nil, fmt.Errorf("consumers of %s: %w", n, err)
		}
	}
	return st, nil
}

// Diff lists what differs from before, one line per stream or consumer.
func (s State) Diff(before State) []string {
	var out []string
	for k, v := range before {
		if now, ok := s[k]; !ok {
			out = append(out, k+": gone (was "+v+")")
		} else if now != v {
			out = append(out, k+": "+v+" -> "+now)
		}
	}
	for k, v := range s {
		if _, ok := before[k]; !ok {
			out = append(out, k+": new ("+v+")")
		}
	}
	sort.Strings(out)
	return out
}
