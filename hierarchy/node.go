// Package hierarchy holds the tree of nodes: their definitions and the rules between
// them, sync and client tokens and who may do what at a node (Access), activation,
// and the settings and status that travel along the tree. It is managed at the root;
// every other node holds its own subtree and the client tokens bound to it.
package hierarchy

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// Mode says whether a node accepts pushes (events.Mode, shared with the registry).
type Mode = events.Mode

// Node modes.
const (
	ReadWrite = events.ReadWrite
	ReadOnly  = events.ReadOnly
)

// Setting bounds, as the product this replaces has them.
const (
	DefaultSchedule = "* * * * *" // always online
	MinSyncWindow   = time.Hour
	MaxSyncWindow   = 7 * 24 * time.Hour
)

// Duration is a time.Duration written as ISO 8601 (P2D, PT3H) in JSON.
type Duration time.Duration

// MarshalJSON writes the ISO 8601 form.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(events.FormatDuration(time.Duration(d)))
}

// UnmarshalJSON reads the ISO 8601 form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := events.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) String() string { return events.FormatDuration(time.Duration(d)) }

// Settings are what an operator sets on a node at the root.
type Settings struct {
	Mode         Mode     `json:"mode"`
	Repositories Scope    `json:"repositories"`
	SyncSchedule string   `json:"syncSchedule"`
	SyncWindow   Duration `json:"syncWindow,omitempty"`
	MessageTTL   Duration `json:"messageTtl"`
	LogLevel     string   `json:"logLevel"`
	// BandwidthLimit caps the bytes per second of content moved over the node's
	// link to its parent, both directions together; 0 is no limit.
	BandwidthLimit int64 `json:"bandwidthLimit,omitempty"`
	// ClientTokens are the client tokens that work at this node.
	ClientTokens []string `json:"clientTokens,omitempty"`
	// AnonymousPull lets clients without credentials pull at this node.
	AnonymousPull bool `json:"anonymousPull,omitempty"`
}

// Node is one site's definition, as the root holds it.
type Node struct {
	Name     string   `json:"name"`
	Parent   string   `json:"parent"`
	Settings Settings `json:"settings"`

	// SyncToken holds the hashes of the node's two sync passwords.
	SyncToken Passwords `json:"syncToken"`
	// Activation is set while a process runs this node.
	Activation *Activation `json:"activation,omitempty"`
	// ResyncGeneration grows on each `node resync`; a node that has applied a lower
	// one reconciles its whole scope.
	ResyncGeneration uint64 `json:"resyncGeneration"`
	// Endpoints the node advertised when it activated, for its children's settings.
	Endpoints Endpoints `json:"endpoints,omitzero"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Endpoints are where a node's children reach it.
type Endpoints struct {
	Registry string `json:"registry,omitempty"` // host:port of the HTTP listener
	Gateway  string `json:"gateway,omitempty"`  // host:port of the NATS gateway
	Protocol string `json:"protocol,omitempty"` // http or https
}

// Activation records the process that runs a node.
type Activation struct {
	Instance string    `json:"instance"`
	Time     time.Time `json:"time"`
}

var nameRegexp = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{4,49}$`)

// ValidateName applies the naming rule: 5 to 50 letters and digits, starting with a letter.
func ValidateName(name string) error {
	if !nameRegexp.MatchString(name) {
		return fmt.Errorf("name %q: 5 to 50 letters and digits, starting with a letter", name)
	}
	return nil
}

// Defaults fills in what an operator left out.
func (s *Settings) Defaults() {
	if s.Mode == "" {
		s.Mode = ReadOnly
	}
	if s.SyncSchedule == "" {
		s.SyncSchedule = DefaultSchedule
	}
	if s.MessageTTL == 0 {
		s.MessageTTL = Duration(events.DefaultMessageTTL)
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
}

// Validate checks each setting on its own, naming the field and its allowed values.
func (s *Settings) Validate() error {
	if _, err := events.ParseMode(string(s.Mode)); err != nil {
		return err
	}
	if err := s.Repositories.Validate(); err != nil {
		return err
	}
	if ttl := time.Duration(s.MessageTTL); ttl < events.MinMessageTTL || ttl > events.MaxMessageTTL {
		return fmt.Errorf("sync message TTL %s: must be from P1D to P90D", s.MessageTTL)
	}
	if _, err := events.ParseSchedule(s.SyncSchedule); err != nil {
		return err
	}
	w := time.Duration(s.SyncWindow)
	switch {
	case s.SyncSchedule != DefaultSchedule && w == 0:
		return fmt.Errorf("sync window: required with sync schedule %q (PT1H to P7D)", s.SyncSchedule)
	case w != 0 && (w < MinSyncWindow || w > MaxSyncWindow):
		return fmt.Errorf("sync window %s: must be from PT1H to P7D", s.SyncWindow)
	}
	if s.BandwidthLimit < 0 {
		return fmt.Errorf("bandwidth limit %d: must be 0 (none) or a number of bytes per second", s.BandwidthLimit)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, s.LogLevel) {
		return fmt.Errorf("log level %q: must be debug, info, warn or error", s.LogLevel)
	}
	return nil
}
