package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestTLSSkopeoPushAndChildSyncOverHTTPS: a root serving TLS with a certificate from
// a private CA takes a skopeo push over https (the CA in --dest-cert-dir), and a
// child that trusts the CA (--parent-ca) syncs from it over https and TLS NATS.
func TestTLSSkopeoPushAndChildSyncOverHTTPS(t *testing.T) {
	skopeo := Tool(t, "skopeo")
	ca := NewTestCA(t)
	root := StartNode(t, NodeOptions{CA: ca, Args: []string{"--tls-cert", ca.Cert, "--tls-key", ca.Key}})

	// Plain http and an https client that does not trust the CA both fail.
	if resp, err := http.Get("http://" + root.Host + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain http to a TLS node: %s", resp.Status)
		}
	}
	if _, err := http.Get(root.URL + "/v2/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("https without the CA: %v, want a certificate error", err)
	}

	src, want := writeLayout(t, 2)
	MustRun(t, clientTimeout, skopeo, "copy", "--dest-cert-dir", ca.Dir, "--dest-creds", "admin:"+AdminToken,
		"oci:"+src+":v1", "docker://"+root.Host+"/tls/app:v1")
	ref, err := name.ParseReference(root.Host + "/tls/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(ref, Auth, remote.WithTransport(ca.Transport()))
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest.String() != want {
		t.Fatalf("root holds %s after skopeo's https push, want %s", d.Digest, want)
	}

	// The child's connection string says ParentEndpointProtocol=https.
	child := StartChild(t, root, Child{Name: "tlssite", Mode: "ReadOnly", Repositories: []string{"tls/*"},
		ServeArgs: []string{"--parent-ca", ca.CACert}})
	if p := csField(child.opts.ConnectionString, "ParentEndpointProtocol"); p != "https" {
		t.Fatalf("connection string protocol %q, want https", p)
	}
	Eventually(t, time.Minute, func() error {
		got, err := remote.Head(mustRef(t, child, "tls/app:v1"), Auth)
		if err != nil {
			return err
		}
		if got.Digest.String() != want {
			t.Fatalf("child holds %s, want %s", got.Digest, want)
		}
		return nil
	})
	// And what is pushed later follows over the same TLS links.
	MustRun(t, clientTimeout, skopeo, "copy", "--dest-cert-dir", ca.Dir, "--dest-creds", "admin:"+AdminToken,
		"oci:"+src+":v1", "docker://"+root.Host+"/tls/app:v2")
	Eventually(t, time.Minute, func() error {
		_, err := remote.Head(mustRef(t, child, "tls/app:v2"), Auth)
		return err
	})
	if out := root.MustCLI(t, "node", "list"); !strings.Contains(out, "tlssite") {
		t.Errorf("node list over https: %s", out)
	}
}
