package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
)

// clusterOptions make a root a member of a root tier: its NATS server joins the
// other members' JetStream cluster. The route secret comes from a file only.
type clusterOptions struct {
	ClusterName       string `yaml:"cluster-name"`
	ClusterListen     string `yaml:"cluster-listen"`
	ClusterAdvertise  string `yaml:"cluster-advertise"`
	ClusterRoutes     string `yaml:"cluster-routes"`
	ClusterServerName string `yaml:"cluster-server-name"`
	ClusterSecretFile string `yaml:"cluster-secret-file"`
	ClusterTLSCert    string `yaml:"cluster-tls-cert"`
	ClusterTLSKey     string `yaml:"cluster-tls-key"`
	ClusterCA         string `yaml:"cluster-ca"`
	ClusterReplicas   string `yaml:"cluster-replicas"`
	// TierRegistry and TierGateway are what `node get-settings` gives sites at
	// every member: all members' endpoints, or a load balancer's.
	TierRegistry string `yaml:"tier-registry"`
	TierGateway  string `yaml:"tier-gateway"`
}

func addClusterFlags(f *pflag.FlagSet, o *clusterOptions) {
	f.StringVar(&o.ClusterName, "cluster-name", "", "root tier only: join the JetStream cluster of this name (the same at every member); empty: a single root")
	f.StringVar(&o.ClusterListen, "cluster-listen", events.DefaultClusterListen, "route listener the other members connect to")
	f.StringVar(&o.ClusterAdvertise, "cluster-advertise", "", "host:port the other members reach this one's routes at, when not --cluster-listen")
	f.StringVar(&o.ClusterRoutes, "cluster-routes", "", "every member's route address, this one's included, comma-separated (host:port)")
	f.StringVar(&o.ClusterServerName, "cluster-server-name", "", "this member's name in the cluster (default: made once, kept in DATA/nats/server-name)")
	f.StringVar(&o.ClusterSecretFile, "cluster-secret-file", "", "file holding the route secret every member shares (at least 16 characters)")
	f.StringVar(&o.ClusterTLSCert, "cluster-tls-cert", "", "PEM certificate this member presents on routes")
	f.StringVar(&o.ClusterTLSKey, "cluster-tls-key", "", "PEM private key of --cluster-tls-cert")
	f.StringVar(&o.ClusterCA, "cluster-ca", "", "PEM CA that signed every member's route certificate")
	f.StringVar(&o.ClusterReplicas, "cluster-replicas", "0", "copies of every stream and bucket (0: min(3, members))")
	f.StringVar(&o.TierRegistry, "tier-registry", "", "registry endpoints of every member (or a load balancer), comma-separated host:port, for the connection strings of the root's children")
	f.StringVar(&o.TierGateway, "tier-gateway", "", "gateway endpoints of every member (or a load balancer), comma-separated host:port, for the connection strings of the root's children")
}

func (o *clusterOptions) fields() map[string]*string {
	return map[string]*string{
		"cluster-name": &o.ClusterName, "cluster-listen": &o.ClusterListen, "cluster-advertise": &o.ClusterAdvertise,
		"cluster-routes": &o.ClusterRoutes, "cluster-server-name": &o.ClusterServerName,
		"cluster-secret-file": &o.ClusterSecretFile, "cluster-tls-cert": &o.ClusterTLSCert,
		"cluster-tls-key": &o.ClusterTLSKey, "cluster-ca": &o.ClusterCA, "cluster-replicas": &o.ClusterReplicas,
		"tier-registry": &o.TierRegistry, "tier-gateway": &o.TierGateway,
	}
}

// clusterConfig is the member's cluster settings, nil for a single root.
func (o *clusterOptions) clusterConfig(logger *slog.Logger) (*events.ClusterConfig, error) {
	if o.ClusterName == "" {
		if o.TierRegistry != "" || o.TierGateway != "" {
			return nil, fmt.Errorf("--tier-registry/--tier-gateway: only with --cluster-name (a root tier's members)")
		}
		return nil, nil
	}
	if err := hierarchy.ValidateEndpoints("--tier-registry", o.TierRegistry); o.TierRegistry != "" && err != nil {
		return nil, err
	}
	if err := hierarchy.ValidateEndpoints("--tier-gateway", o.TierGateway); o.TierGateway != "" && err != nil {
		return nil, err
	}
	if o.ClusterSecretFile == "" {
		return nil, withHint(fmt.Errorf("--cluster-name %s: no --cluster-secret-file", o.ClusterName),
			"head -c 32 /dev/urandom | base64 > route.secret; copy it to every member; outpost serve --cluster-secret-file route.secret ...")
	}
	b, err := os.ReadFile(o.ClusterSecretFile)
	if err != nil {
		return nil, fmt.Errorf("cluster secret file: %w", err)
	}
	replicas, err := strconv.Atoi(o.ClusterReplicas)
	if err != nil {
		return nil, fmt.Errorf("cluster-replicas %q: want a number", o.ClusterReplicas)
	}
	c := &events.ClusterConfig{Name: o.ClusterName, Listen: o.ClusterListen, Advertise: o.ClusterAdvertise,
		ServerName: o.ClusterServerName, Secret: strings.TrimSpace(string(b)),
		CertFile: o.ClusterTLSCert, KeyFile: o.ClusterTLSKey, CAFile: o.ClusterCA, Replicas: replicas, Logger: logger}
	for _, r := range strings.Split(o.ClusterRoutes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			c.Routes = append(c.Routes, r)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
