package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Every serve flag can come from the environment as OUTPOST_<FLAG>, upper case
// with dashes as underscores (--gateway-addr: OUTPOST_GATEWAY_ADDR), for
// containers and systemd units. What wins: a flag, then its variable, then the
// config file (--config or OUTPOST_CONFIG), then the default. Secrets have their
// own variables and no flag: OUTPOST_CONNECTION_STRING, OUTPOST_ADMIN_TOKEN,
// OUTPOST_OPERATOR_TOKEN.

// envName is the variable of a serve flag.
func envName(flag string) string {
	return "OUTPOST_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// noEnv are the flags without a variable: the test-only clock, the hidden pprof
// listener (benchmarks), and the refused
// --connection-string (its variable is the secret's own, read by connectionString).
var noEnv = map[string]bool{"clock-offset-file": true, "connection-string": true, "pprof-addr": true}

// overrideFromEnv sets each setting whose variable is set (to any value: an empty
// one is a value too, and refused where empty is wrong).
func overrideFromEnv(opts *serveOptions) error {
	for flag, dst := range opts.fields() {
		if noEnv[flag] {
			continue
		}
		v, ok := os.LookupEnv(envName(flag))
		if !ok {
			continue
		}
		if flag == "connection-string-file" && strings.TrimSpace(v) == "" {
			// As with the flag: an unset variable in a unit file must not start a root.
			return usage(fmt.Errorf("%s is set but empty: no file named", envName(flag)),
				"unset it to run a root, or set it to the file `outpost node get-settings NAME` was written to")
		}
		*dst = v
	}
	return nil
}

// documentEnv appends each flag's variable to its help.
func documentEnv(f *pflag.FlagSet) {
	f.VisitAll(func(fl *pflag.Flag) {
		if !noEnv[fl.Name] {
			fl.Usage += " (env " + envName(fl.Name) + ")"
		}
	})
}
