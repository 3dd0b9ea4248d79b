package events

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"P2D": 48 * time.Hour, "PT3H": 3 * time.Hour, "P1DT12H": 36 * time.Hour, "P1W": 7 * 24 * time.Hour,
		"PT90M": 90 * time.Minute, "PT1S": time.Second, "P90D": 90 * 24 * time.Hour,
	} {
		got, err := ParseDuration(s)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
		if back, _ := ParseDuration(FormatDuration(got)); back != got {
			t.Errorf("FormatDuration(%v) = %q does not read back", got, FormatDuration(got))
		}
	}
	for _, s := range []string{"", "P", "PT", "2D", "P1Y", "P1M", "P1DT", "PT-1H", "p2d", "P2.5D", "P99999999999999999999D"} {
		if d, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", s, d)
		}
	}
}

func TestLogConfigRefusesTTLOutsideOneToNinetyDays(t *testing.T) {
	for _, ttl := range []time.Duration{time.Hour, 23 * time.Hour, 91 * 24 * time.Hour} {
		c := LogConfig{MessageTTL: ttl}
		if err := c.Validate(); err == nil {
			t.Errorf("TTL %v accepted", ttl)
		}
	}
	for _, ttl := range []time.Duration{MinMessageTTL, DefaultMessageTTL, MaxMessageTTL} {
		c := LogConfig{MessageTTL: ttl}
		if err := c.Validate(); err != nil {
			t.Errorf("TTL %v refused: %v", ttl, err)
		}
	}
}

func TestEventValidate(t *testing.T) {
	ok := Event{ID: "x", Action: ActionPush, Repository: "a", Digest: "sha256:00"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]Event{
		"no id":                 {Action: ActionPush, Repository: "a", Digest: "d"},
		"bad action":            {ID: "x", Action: "move", Repository: "a"},
		"no repository":         {ID: "x", Action: ActionPush, Digest: "d"},
		"tag delete sans tag":   {ID: "x", Action: ActionTagDelete, Repository: "a"},
		"push without digest":   {ID: "x", Action: ActionPush, Repository: "a", Tag: "t"},
		"delete without digest": {ID: "x", Action: ActionManifestDelete, Repository: "a"},
	} {
		if err := e.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
