package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/node"
)

// Exit codes: what a script can tell apart without reading the message. Every
// error goes through exitCode, the one place that classifies them.
const (
	exitOK          = 0 // done
	exitFailure     = 1 // anything else: the node answered 5xx, or reported the work failed (gc stopped early, a blob not healed)
	exitUsage       = 2 // the command line is wrong (flags, arguments, values), the node refused the request as invalid (400), or it is the wrong node for it (421)
	exitAuth        = 3 // no credentials, or the node refused them (401, 403)
	exitNotFound    = 4 // what the command names does not exist there (404)
	exitUnreachable = 5 // no answer: connection refused, timed out, a TLS failure, or the node is not ready (503)
	exitConflict    = 6 // the request conflicts with the node's state: already exists, already active, another run in progress (409); serve: ALREADY_ACTIVATED, or the data directory is in use
)

// exitCodesHelp is the table `outpost --help` and the README show.
const exitCodesHelp = `Exit codes:
  0  ok
  1  other failure (the node answered 5xx, or reported that the work failed)
  2  usage: wrong flags, arguments or values; a request the node refused as invalid (400); the wrong node for it (421)
  3  authentication: no token, or the node refused it (401, 403)
  4  not found: what the command names does not exist there (404)
  5  unreachable: no answer from --server (refused, timed out, TLS), or the node is not ready (503)
  6  conflict: already exists, already active, or another run in progress (409);
     serve: another process is active for the node (ALREADY_ACTIVATED) or holds its data directory
  healthcheck exits 0 or 1 only, as container health checks want`

// APIError is a node's error answer: its HTTP status and its own message.
type APIError struct {
	Method, URL string
	Status      int
	// Code is the answer's error code when it gave one (UNAUTHORIZED, NOT_ROOT...).
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// UnreachableError is a request that got no answer from the node.
type UnreachableError struct {
	Method, URL string
	Err         error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Method, e.URL, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// unhealthyError is a failed `outpost healthcheck`: always exit 1, whatever the
// cause, as HEALTHCHECK conventions (Docker, podman) want.
type unhealthyError struct{ err error }

func (e *unhealthyError) Error() string { return e.err.Error() }
func (e *unhealthyError) Unwrap() error { return e.err }

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usage marks err as a usage mistake, with what to try instead ("" for none).
func usage(err error, hint string) error {
	if err == nil {
		return nil
	}
	err = &usageError{err}
	if hint != "" {
		err = withHint(err, hint)
	}
	return err
}

// exitCode classifies an error for the process's exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var api *APIError
	var unreachable *UnreachableError
	var unhealthy *unhealthyError
	switch {
	case errors.As(err, &unhealthy):
		return exitFailure // a container runtime's health check reads 1 as unhealthy; 2 and up are reserved
	case errors.As(err, &ue), isCobraUsage(err):
		return exitUsage
	case errors.Is(err, hierarchy.ErrAlreadyActivated), errors.Is(err, node.ErrDataDirInUse):
		return exitConflict // serve: another process runs this node or holds its data
	case errors.As(err, &api):
		switch {
		case api.Status == http.StatusBadRequest || api.Status == http.StatusMisdirectedRequest || api.Status == http.StatusMethodNotAllowed:
			return exitUsage
		case api.Status == http.StatusUnauthorized || api.Status == http.StatusForbidden:
			return exitAuth
		case api.Status == http.StatusNotFound:
			return exitNotFound
		case api.Status == http.StatusConflict:
			return exitConflict
		case api.Status == http.StatusServiceUnavailable || api.Status == http.StatusBadGateway || api.Status == http.StatusGatewayTimeout:
			return exitUnreachable
		}
		return exitFailure
	case errors.As(err, &unreachable):
		if errors.Is(err, context.Canceled) {
			return exitFailure // interrupted by the operator, not a dead node
		}
		return exitUnreachable
	}
	return exitFailure
}

// isCobraUsage recognises cobra's own usage errors, which are plain strings.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "required flag"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// reachError wraps a request that got no answer (refused, timed out, DNS, TLS):
// every error of the HTTP client's Do is one.
func reachError(method, url string, err error) error {
	return &UnreachableError{Method: method, URL: url, Err: err}
}
