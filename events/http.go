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
