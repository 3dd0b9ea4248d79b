package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed notification.
//
// Outpost-Timestamp is the Unix time (seconds) of the attempt; Outpost-Signature is
// "sha256=" and the hex HMAC-SHA256, keyed by the webhook's secret, of
// "<timestamp>.<body>". A receiver recomputes it over the raw body, compares in
// constant time, and refuses a timestamp older than a few minutes, so that a
// captured request cannot be replayed later. Each retry is signed afresh.
const (
	HeaderSignature = "Outpost-Signature"
	HeaderTimestamp = "Outpost-Timestamp"
	// HeaderWebhook names the webhook a request is for.
	HeaderWebhook = "Outpost-Webhook"
)

// Sign returns the Outpost-Signature value of body sent at ts.
func Sign(secret string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Named errors of Verify.
var (
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside the accepted window")
)

// Verify checks a received notification: the signature over timestamp and body,
// and that the timestamp lies within tolerance of now. Receivers written in Go may
// call it; it documents the check for others.
func Verify(secret, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%s %q: %w", HeaderTimestamp, timestamp, ErrBadSignature)
	}
	ts := time.Unix(secs, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return fmt.Errorf("%s %s is %s from now: %w", HeaderTimestamp, timestamp, d.Round(time.Second), ErrStale)
	}
	if !strings.HasPrefix(signature, "sha256=") ||
		!hmac.Equal([]byte(signature), []byte(Sign(secret, ts, body))) {
		return ErrBadSignature
	}
	return nil
}
