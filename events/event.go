// Package events defines what a registry change looks like in a node's log and owns
// every NATS name (servers, streams, subjects, TTLs, dedupe ids). No other package
// knows a NATS subject.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nuid"
)

// Action is what happened to a repository.
type Action string

// The actions a node records. A push covers a manifest put by tag or by digest.
const (
	ActionPush             Action = "push"
	ActionTagDelete        Action = "tag-delete"
	ActionManifestDelete   Action = "manifest-delete"
	ActionRepositoryDelete Action = "repository-delete"
)

// Valid reports whether a is one of the known actions.
func (a Action) Valid() bool {
	switch a {
	case ActionPush, ActionTagDelete, ActionManifestDelete, ActionRepositoryDelete:
		return true
	}
	return false
}

// Event is one change to a node's registry. It describes what changed, not the
// content: replication reads the source's current state when it applies an event.
type Event struct {
	// ID is unique per event and is the JetStream dedupe id (Nats-Msg-Id).
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Action     Action    `json:"action"`
	Repository string    `json:"repository"`
	Tag        string    `json:"tag,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	MediaType  string    `json:"mediaType,omitempty"`
	Size       int64     `json:"size,omitempty"`
	// Subject is the digest of the manifest this one refers to (OCI referrers).
	Subject string `json:"subject,omitempty"`
	// Origin is the node where the change was first made.
	Origin string `json:"origin"`
	// From is the neighbour that delivered the change here by replication; empty when
	// a client made it here. The router never sends an event back where it came from.
	From string `json:"from,omitempty"`
	// Sequence is the event's position in the log; set when read, never published.
	Sequence uint64 `json:"sequence,omitempty"`
}

// NewID returns a fresh event id.
func NewID() string { return nuid.Next() }

// Validate says what is missing or wrong in e.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("event: id is empty")
	case !e.Action.Valid():
		return fmt.Errorf("event %s: unknown action %q", e.ID, e.Action)
	case e.Repository == "":
		return fmt.Errorf("event %s: repository is empty", e.ID)
	case e.Action == ActionTagDelete && e.Tag == "":
		return fmt.Errorf("event %s: tag-delete without tag", e.ID)
	case (e.Action == ActionPush || e.Action == ActionManifestDelete) && e.Digest == "":
		return fmt.Errorf("event %s: %s without digest", e.ID, e.Action)
	}
	return nil
}

// String is a one-line human form, for logs and `outpost events`.
func (e *Event) String() string {
	ref := e.Repository
	if e.Tag != "" {
		ref += ":" + e.Tag
	}
	if e.Digest != "" {
		ref += "@" + e.Digest
	}
	s := fmt.Sprintf("%d %s %-17s %s origin=%s", e.Sequence, e.Time.UTC().Format(time.RFC3339Nano), e.Action, ref, e.Origin)
	if e.Subject != "" {
		s += " subject=" + e.Subject
	}
	return s
}

func decode(data []byte, seq uint64) (*Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode event %d: %w", seq, err)
	}
	e.Sequence = seq
	return &e, nil
}
