package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/sirupsen/logrus"
)

// newLogger builds the process logger. The embedded distribution app logs through
// logrus, in the same format.
func newLogger(w io.Writer, level, format string, lv *slog.LevelVar) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "text", "":
		h = slog.NewTextHandler(w, opts)
		logrus.SetFormatter(&logrus.TextFormatter{DisableColors: true})
	case "json":
		h = slog.NewJSONHandler(w, opts)
		logrus.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	logrus.SetOutput(w)
	// The registry logs failed requests itself; distribution's request log (every
	// 404 of a push's HEAD checks at error level) is only for debugging.
	if l <= slog.LevelDebug {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		logrus.SetLevel(logrus.FatalLevel)
	}
	return slog.New(h), nil
}
