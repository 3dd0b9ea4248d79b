package notify

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// ContentType is the structured-mode CloudEvents media type of a notification body.
const ContentType = "application/cloudevents+json"

// TypePrefix is how every notification's CloudEvents type starts: io.outpost.image.push,
// io.outpost.image.delete.
const TypePrefix = "io.outpost.image."

// CloudEvent is a notification body, CloudEvents 1.0 in structured JSON mode. The
// (source, id) pair is unique: id is the Outpost event id at the node that notifies,
// so a redelivery carries the same id and a receiver can drop duplicates.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            EventData `json:"data"`
}

// EventData is what changed.
type EventData struct {
	// Action is the Outpost action: push, tag-delete, manifest-delete or
	// repository-delete (the type says push or delete).
	Action     string `json:"action"`
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest,omitempty"`
	MediaType  string `json:"mediaType,omitempty"`
	Size       int64  `json:"size,omitempty"`
	// Node is where the change happened (the node that notifies).
	Node string `json:"node"`
	// Origin is where the change was first made; a change that arrived here by
	// replication has another node's name.
	Origin string `json:"origin"`
	// From is the neighbour that delivered a replicated change.
	From string `json:"from,omitempty"`
}

// NewCloudEvent describes e, which happened at node.
func NewCloudEvent(node string, e *events.Event) CloudEvent {
	subject := e.Repository
	if e.Tag != "" {
		subject += ":" + e.Tag
	} else if e.Digest != "" {
		subject += "@" + e.Digest
	}
	return CloudEvent{
		SpecVersion: "1.0", ID: e.ID, Source: "/outpost/" + node,
		Type: TypePrefix + string(ActionOf(e.Action)), Subject: subject, Time: e.Time.UTC(),
		DataContentType: "application/json",
		Data: EventData{Action: string(e.Action), Repository: e.Repository, Tag: e.Tag, Digest: e.Digest,
			MediaType: e.MediaType, Size: e.Size, Node: node, Origin: e.Origin, From: e.From},
	}
}

// Body is the JSON the receiver gets.
func (c CloudEvent) Body() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("notification %s: %w", c.ID, err)
	}
	return b, nil
}
