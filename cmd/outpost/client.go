package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/node"
)

// apiClient talks to a node's HTTP API for the CLI's client commands.
type apiClient struct {
	server string
	token  string
	// user and password sign in to the registry (a client token), instead of token.
	user, password string
	// caFile is a private CA to check an https server with.
	caFile string
}

// addServerFlag adds --server, the node a client command talks to.
func (c *apiClient) addServerFlag(f *pflag.FlagSet) {
	def := "http://127.0.0.1:5000"
	if v := os.Getenv("OUTPOST_SERVER"); v != "" {
		def = v
	}
	f.StringVar(&c.server, "server", def, "the node's HTTP address (env OUTPOST_SERVER)")
	f.StringVar(&c.caFile, "ca-file", os.Getenv("OUTPOST_CA_FILE"), "PEM CA certificate to check an https --server with (env OUTPOST_CA_FILE)")
}

// addTokenFlag adds --token, the node's operator token: the admin token at the root.
func (c *apiClient) addTokenFlag(f *pflag.FlagSet) {
	f.StringVar(&c.token, "token", os.Getenv("OUTPOST_TOKEN"), "the admin token at the root, the operator token (DATA/operator-token) elsewhere (env OUTPOST_TOKEN)")
}

// addLoginFlags adds --username and --password, a client token for registry calls.
func (c *apiClient) addLoginFlags(f *pflag.FlagSet) {
	f.StringVar(&c.user, "username", os.Getenv("OUTPOST_USERNAME"), "a client token's name (env OUTPOST_USERNAME)")
	f.StringVar(&c.password, "password", "", "the client token's password (env OUTPOST_PASSWORD; prefer the variable)")
}

// do sends a request with an optional JSON body and decodes a JSON answer into out.
// An error answer becomes an error carrying the node's own message.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return nil
}

// send returns the response of a successful request; the caller closes its body.
func (c *apiClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	url := strings.TrimSuffix(c.server, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.user != "":
		pw := c.password
		if pw == "" {
			pw = os.Getenv("OUTPOST_PASSWORD")
		}
		req.SetBasicAuth(c.user, pw)
	case c.token != "" && strings.HasPrefix(path, "/outpost/v1/repositories/"):
		// The registry's own API: the admin token signs in as the admin.
		req.SetBasicAuth("admin", c.token)
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	client := http.DefaultClient
	if c.caFile != "" {
		cfg, err := node.ClientTLS(c.caFile)
		if err != nil {
			return nil, err
		}
		client = &http.Client{Transport: node.HTTPSTransport(cfg)}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, reachError(method, url, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, answerError(method, url, resp.StatusCode, data)
}

// answerError reads a node's error answer into an APIError: its own message when
// it gave one, with what to try for the common ones.
func answerError(method, url string, status int, data []byte) error {
	e := &APIError{Method: method, URL: url, Status: status}
	var answer struct {
		Error  string                           `json:"error"`
		Code   string                           `json:"code"`
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	switch {
	case json.Unmarshal(data, &answer) == nil && answer.Error != "":
		e.Code, e.Message = answer.Code, answer.Error
	case len(answer.Errors) > 0:
		e.Code, e.Message = answer.Errors[0].Code, answer.Errors[0].Code+": "+answer.Errors[0].Message
	default:
		e.Message = fmt.Sprintf("%s %s: %d %s %s", method, url, status, http.StatusText(status), strings.TrimSpace(string(data)))
	}
	switch status {
	case http.StatusUnauthorized:
		return withHint(e, "give the node's operator token with --token or OUTPOST_TOKEN: the admin token at the root (DATA/admin-token), DATA/operator-token elsewhere")
	case http.StatusServiceUnavailable:
		return withHint(e, "the node is starting or not ready: its log and its /readyz say why")
	}
	return e
}
