package hierarchy

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// ConnectionString is what `node get-settings` prints and `serve --connection-string`
// reads: semicolon-separated Key=Value pairs with ACR's key names.
//
// ParentGateway and ParentRegistry name one endpoint, host:port, or several
// separated by commas: the members of a root tier, or a load balancer in front of
// them. A site's gateway connection and its copies fail over between them; a
// string with one endpoint each reads as it always did.
type ConnectionString struct {
	NodeName          string // ConnectedRegistryName
	SyncTokenName     string
	SyncTokenPassword string
	ParentGateway     string // ParentGatewayEndpoint, host:port[,host:port...]
	ParentProtocol    string // ParentEndpointProtocol, http or https
	ParentRegistry    string // ParentRegistryEndpoint, host:port[,host:port...]
}

// GatewayEndpoints lists the parent's gateway endpoints, in the order given.
func (c ConnectionString) GatewayEndpoints() []string { return splitEndpoints(c.ParentGateway) }

// RegistryEndpoints lists the parent's registry endpoints, in the order given.
func (c ConnectionString) RegistryEndpoints() []string { return splitEndpoints(c.ParentRegistry) }

func splitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (c ConnectionString) String() string {
	return fmt.Sprintf("ConnectedRegistryName=%s;SyncTokenName=%s;SyncTokenPassword=%s;ParentGatewayEndpoint=%s;ParentEndpointProtocol=%s;ParentRegistryEndpoint=%s",
		c.NodeName, c.SyncTokenName, c.SyncTokenPassword, c.ParentGateway, c.ParentProtocol, c.ParentRegistry)
}

// ParseConnectionString reads a connection string, naming what is missing or unknown.
// Its error never repeats the password.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	fields := map[string]*string{
		"ConnectedRegistryName": &c.NodeName, "SyncTokenName": &c.SyncTokenName,
		"SyncTokenPassword": &c.SyncTokenPassword, "ParentGatewayEndpoint": &c.ParentGateway,
		"ParentEndpointProtocol": &c.ParentProtocol, "ParentRegistryEndpoint": &c.ParentRegistry,
	}
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return c, fmt.Errorf("connection string: %q is not Key=Value", redact(k))
		}
		f, known := fields[k]
		if !known {
			return c, fmt.Errorf("connection string: unknown key %q", k)
		}
		*f = v
	}
	var missing []string
	for k, f := range fields {
		if *f == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return c, fmt.Errorf("connection string: missing %s", strings.Join(missing, ", "))
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Validate checks the values, naming the key and the endpoint that is wrong (a
// site whose endpoints were overridden after parsing checks them again).
func (c ConnectionString) Validate() error {
	if c.ParentProtocol != "http" && c.ParentProtocol != "https" {
		return fmt.Errorf("connection string: ParentEndpointProtocol %q: must be http or https", c.ParentProtocol)
	}
	if err := ValidateName(c.NodeName); err != nil {
		return fmt.Errorf("connection string: ConnectedRegistryName: %v", err)
	}
	if err := ValidateEndpoints("ParentGatewayEndpoint", c.ParentGateway); err != nil {
		return err
	}
	return ValidateEndpoints("ParentRegistryEndpoint", c.ParentRegistry)
}

// ValidateEndpoints checks a list of endpoints as a connection string holds it:
// host[:port], several separated by commas; key names it in the error.
func ValidateEndpoints(key, list string) error {
	parts := strings.Split(list, ",")
	seen := map[string]bool{}
	for i, e := range parts {
		e = strings.TrimSpace(e)
		where := fmt.Sprintf("connection string: %s %q", key, list)
		if len(parts) > 1 {
			where += fmt.Sprintf(": endpoint %d of %d", i+1, len(parts))
		}
		if err := checkEndpoint(e); err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		if seen[e] {
			return fmt.Errorf("%s: %s is listed twice", where, e)
		}
		seen[e] = true
	}
	return nil
}

func checkEndpoint(e string) error {
	switch {
	case e == "":
		return errors.New("empty (endpoints are separated by single commas)")
	case strings.Contains(e, "://"):
		return fmt.Errorf("%q: host:port, without a scheme (ParentEndpointProtocol says http or https)", e)
	case strings.ContainsAny(e, "/@?# \t"):
		return fmt.Errorf("%q: host:port only, no path, credentials or spaces", e)
	}
	host, port := e, ""
	if strings.Contains(e, ":") {
		var err error
		if host, port, err = net.SplitHostPort(e); err != nil {
			return fmt.Errorf("%q: not host:port (an IPv6 address goes in brackets: [::1]:5000)", e)
		}
	}
	if host == "" {
		return fmt.Errorf("%q: the host is empty", e)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port must be 1 to 65535", e)
		}
	}
	return nil
}

func redact(s string) string {
	if len(s) > 24 {
		return s[:8] + "…"
	}
	return s
}
