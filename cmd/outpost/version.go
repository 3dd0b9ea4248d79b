package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
)

// version and commit are set by the release build (Makefile: -ldflags "-X
// main.version=... -X main.commit=..."); a plain `go build` leaves them empty and
// buildVersion falls back to what the Go toolchain recorded in the binary.
var (
	version string
	commit  string
)

// versionInfo is what `outpost version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func (v versionInfo) String() string {
	return fmt.Sprintf("outpost %s (commit %s, %s, %s)", v.Version, v.Commit, v.GoVersion, v.Platform)
}

// buildVersion reads the -ldflags values, else the build info: the module
// version (a tag when built with `go install ...@vX`) and the VCS revision
// (`go build` inside a git checkout).
func buildVersion() versionInfo {
	v := versionInfo{Version: version, Commit: commit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		if v.Commit == "" {
			var rev, modified string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if rev != "" && modified == "true" {
				rev += "-dirty"
			}
			v.Commit = rev
		}
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

// addVersion gives the root command `--version` and the `version` and
// `healthcheck` commands.
func addVersion(root *cobra.Command) {
	root.Version = buildVersion().String()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newVersionCmd(), newHealthcheckCmd())
}

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit and Go version of this binary",
		Example: "  outpost version\n  outpost version --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			switch output {
			case "text":
				fmt.Fprintln(cmd.OutOrStdout(), v)
				return nil
			case "json":
				return printJSON(cmd.OutOrStdout(), v)
			}
			return fmt.Errorf("--output %q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// newHealthcheckCmd checks a node's /healthz from the node's own machine: a
// container image built FROM scratch has no curl or wget for its HEALTHCHECK.
func newHealthcheckCmd() *cobra.Command {
	var (
		c       apiClient
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the node's /healthz answers 200 (for container health checks)",
		Example: `  outpost healthcheck                                  # http://127.0.0.1:5000/healthz
  outpost healthcheck --server https://127.0.0.1:5000 --ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			resp, err := c.send(ctx, http.MethodGet, "/healthz", nil)
			if err != nil {
				return &unhealthyError{fmt.Errorf("healthcheck: %w", err)}
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			_ = resp.Body.Close()
			return nil
		},
	}
	c.addServerFlag(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}
