package events

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Handler serves the log as JSON lines, oldest first: GET ?last=N&follow=true.
// It is an operator's debugging aid behind `outpost events`.
func Handler(l *Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		var opts ReadOptions
		if s := r.URL.Query().Get("last"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("last=%q: want a whole number", s), http.StatusBadRequest)
				return
			}
			opts.Last = n
		}
		opts.Follow = r.URL.Query().Get("follow") == "true"
		w.Header().Set("Content-Type", "application/x-ndjson")
		if d := l.Damage(); d != nil {
			// The reader gets what remains, and is told what does not.
			w.Header().Set(DamageHeader, d.Error())
		}
		enc := json.NewEncoder(w)
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		err := l.Read(r.Context(), opts, func(e *Event) error {
			if err := enc.Encode(e); err != nil {
				return err
			}
			return rc.Flush()
		})
		if err != nil && r.Context().Err() == nil {
			// The status is sent; the error goes into the stream where the reader sees it.
			_ = enc.Encode(map[string]string{"error": err.Error()})
		}
	})
}

// DamageHeader carries, on an events answer, what the log lost on disk.
const DamageHeader = "Outpost-Event-Log-Damage"

// RepairHandler is the operator's acknowledgement of a damaged log (`outpost events
// repair --ack-loss`): POST ?ack-loss=true. It answers JSON: the damage that was
// acknowledged, or null when the log was not damaged.
func RepairHandler(l *Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "POST only"})
			return
		}
		if r.URL.Query().Get("ack-loss") != "true" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "repairing the event log acknowledges that the events it lost are gone: say ack-loss=true"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readCallTimeout)
		defer cancel()
		d, err := l.AcknowledgeDamage(ctx)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(struct {
			Acknowledged *Damage `json:"acknowledged"`
		}{d})
	})
}

// ReadStream decodes the JSON lines Handler writes and calls fn with each event.
func ReadStream(ctx context.Context, r io.Reader, fn func(*Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var line struct {
			Event
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("read event stream: %w", err)
		}
		if line.Error != "" {
			return fmt.Errorf("event log: %s", line.Error)
		}
		e := line.Event
		if err := fn(&e); err != nil {
			return err
		}
	}
	return sc.Err()
}
