package hierarchy

import (
	"slices"
	"strings"
	"testing"
)

// A connection string may name several parent endpoints (a root tier's members);
// one with a single endpoint each reads as before.
func TestConnectionStringSeveralEndpoints(t *testing.T) {
	old := "ConnectedRegistryName=siteone;SyncTokenName=siteone-sync;SyncTokenPassword=pw0123456789;" +
		"ParentGatewayEndpoint=10.0.0.1:4222;ParentEndpointProtocol=https;ParentRegistryEndpoint=registry.example:5000"
	cs, err := ParseConnectionString(old)
	if err != nil {
		t.Fatalf("a single-endpoint string: %v", err)
	}
	if g, r := cs.GatewayEndpoints(), cs.RegistryEndpoints(); !slices.Equal(g, []string{"10.0.0.1:4222"}) || !slices.Equal(r, []string{"registry.example:5000"}) {
		t.Errorf("single endpoints: %v %v", g, r)
	}
	if cs.String() != old {
		t.Errorf("round trip changed the string:\n%s\n%s", cs.String(), old)
	}
	tier := strings.NewReplacer("ParentGatewayEndpoint=10.0.0.1:4222", "ParentGatewayEndpoint=10.0.0.1:4222,10.0.0.2:4222, [fd00::3]:4222",
		"ParentRegistryEndpoint=registry.example:5000", "ParentRegistryEndpoint=lb.example").Replace(old)
	cs, err = ParseConnectionString(tier)
	if err != nil {
		t.Fatalf("several endpoints: %v", err)
	}
	if g := cs.GatewayEndpoints(); !slices.Equal(g, []string{"10.0.0.1:4222", "10.0.0.2:4222", "[fd00::3]:4222"}) {
		t.Errorf("gateway endpoints %v", g)
	}
	if r := cs.RegistryEndpoints(); !slices.Equal(r, []string{"lb.example"}) {
		t.Errorf("registry endpoints %v (a load balancer without a port)", r)
	}
	again, err := ParseConnectionString(cs.String())
	if err != nil || again != cs {
		t.Errorf("round trip: %+v, %v", again, err)
	}
	for value, want := range map[string]string{
		"10.0.0.1:4222,,10.0.0.2:4222":   "endpoint 2 of 3: empty",
		"10.0.0.1:4222,":                 "endpoint 2 of 2: empty",
		"nats://10.0.0.1:4222":           "without a scheme",
		"10.0.0.1:4222,10.0.0.1:4222":    "10.0.0.1:4222 is listed twice",
		"10.0.0.1:99999":                 "port must be 1 to 65535",
		"10.0.0.1:http":                  "port must be 1 to 65535",
		"fd00::3:4222":                   "an IPv6 address goes in brackets",
		":4222":                          "the host is empty",
		"user:pw@10.0.0.1:4222":          "no path, credentials or spaces",
		"10.0.0.1:4222/path":             "no path, credentials or spaces",
		"10.0.0.1:4222 10.0.0.2:4222":    "no path, credentials or spaces",
		"10.0.0.1:4222;x":                "is not Key=Value", // a semicolon ends the value
		"a.example:1,b.example:2,:3":     "endpoint 3 of 3",
		"10.0.0.1:4222, 10.0.0.2:0":      "endpoint 2 of 2",
		"":                               "missing ParentGatewayEndpoint",
		"10.0.0.1:4222,b.example:4222,,": "endpoint 3 of 4",
	} {
		s := strings.Replace(old, "ParentGatewayEndpoint=10.0.0.1:4222", "ParentGatewayEndpoint="+value, 1)
		_, err := ParseConnectionString(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParentGatewayEndpoint=%q: %v; want an error containing %q", value, err, want)
			continue
		}
		if want != "is not Key=Value" && want != "missing ParentGatewayEndpoint" && !strings.Contains(err.Error(), "ParentGatewayEndpoint") {
			t.Errorf("ParentGatewayEndpoint=%q: %v; want the key named", value, err)
		}
		if strings.Contains(err.Error(), "pw0123456789") {
			t.Errorf("error repeats the password: %v", err)
		}
	}
	bad := strings.Replace(old, "registry.example:5000", "registry.example:5000,https://other:5000", 1)
	if _, err := ParseConnectionString(bad); err == nil || !strings.Contains(err.Error(), `ParentRegistryEndpoint "registry.example:5000,https://other:5000": endpoint 2 of 2: "https://other:5000": host:port, without a scheme`) {
		t.Errorf("a registry endpoint with a scheme: %v", err)
	}
}
