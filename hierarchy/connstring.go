package hierarchy

import (
	"fmt"
	"sort"
	"strings"
)

// ConnectionString is what `node get-settings` prints and `serve --connection-string`
// reads: semicolon-separated Key=Value pairs with ACR's key names.
type ConnectionString struct {
	NodeName          string // ConnectedRegistryName
	SyncTokenName     string
	SyncTokenPassword string
	ParentGateway     string // ParentGatewayEndpoint, host:port
	ParentProtocol    string // ParentEndpointProtocol, http or https
	ParentRegistry    string // ParentRegistryEndpoint, host:port
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
	if c.ParentProtocol != "http" && c.ParentProtocol != "https" {
		return c, fmt.Errorf("connection string: ParentEndpointProtocol %q: must be http or https", c.ParentProtocol)
	}
	if err := ValidateName(c.NodeName); err != nil {
		return c, fmt.Errorf("connection string: ConnectedRegistryName: %v", err)
	}
	return c, nil
}

func redact(s string) string {
	if len(s) > 24 {
		return s[:8] + "…"
	}
	return s
}
