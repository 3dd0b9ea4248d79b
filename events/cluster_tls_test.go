package events

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// routeCA writes a CA and a certificate it signed for 127.0.0.1, good for both
// ends of a route (a member dials and is dialled), as PEM files in a new
// directory: ca.pem, cert.pem, key.pem.
func routeCA(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "route CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "member"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// Members with route TLS form a cluster; a member whose certificate another CA
// signed is not let in.
func TestClusterRouteTLS(t *testing.T) {
	ca, cert, key := routeCA(t)
	cfgs := clusterConfigs(t, 4)
	for _, c := range cfgs {
		c.Cluster.CAFile, c.Cluster.CertFile, c.Cluster.KeyFile = ca, cert, key
	}
	// The first three know each other; the fourth dials them with a certificate of
	// its own CA.
	for _, c := range cfgs[:3] {
		c.Cluster.Routes = cfgs[0].Cluster.Routes[:3]
	}
	servers, errs := startMembers(t, cfgs[:3])
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d with route TLS: %v", i, err)
		}
	}
	for i, s := range servers {
		vz, err := s.ns.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		if st := s.ClusterStatus(); len(st.Routed) != 2 || !vz.Cluster.TLSRequired || !vz.Cluster.TLSVerify {
			t.Errorf("member %d: routed to %v (TLS required %v, verified %v), want 2 members over verified TLS",
				i, st.Routed, vz.Cluster.TLSRequired, vz.Cluster.TLSVerify)
		}
	}
	_, cert2, key2 := routeCA(t)
	stranger := cfgs[3]
	stranger.Cluster.CertFile, stranger.Cluster.KeyFile, stranger.Cluster.StartupTimeout = cert2, key2, 3*time.Second
	s, err := StartServer(stranger)
	if err == nil {
		s.Shutdown()
		t.Fatal("a member with another CA's certificate joined")
	}
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "reaches 0 other member(s)") {
		t.Errorf("member with another CA's certificate: %v; want no route to any member", err)
	}
	for i, s := range servers {
		if err := s.Healthy(); err != nil {
			t.Errorf("member %d after the stranger tried: %v", i, err)
		}
	}
}
