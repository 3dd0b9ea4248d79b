package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// addServerFlag adds --server, the node a client command talks to.
func addServerFlag(f *pflag.FlagSet, server *string) {
	def := "http://127.0.0.1:5000"
	if v := os.Getenv("OUTPOST_SERVER"); v != "" {
		def = v
	}
	f.StringVar(server, "server", def, "the node's HTTP address (env OUTPOST_SERVER)")
}

// call sends a request to a node and turns an error answer into an error that
// carries the node's own message.
func call(ctx context.Context, method, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var oci struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(body, &oci) == nil && len(oci.Errors) > 0 {
		return nil, fmt.Errorf("%s: %s", oci.Errors[0].Code, oci.Errors[0].Message)
	}
	return nil, fmt.Errorf("%s %s: %s %s", method, url, resp.Status, strings.TrimSpace(string(body)))
}
