package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// serverTLS is the TLS the node's listeners (HTTP and the gateway) serve with, or
// nil without --tls-cert.
func serverTLS(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "" || keyFile == "":
		return nil, fmt.Errorf("tls: --tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}}, nil
}

// ClientTLS is how a node checks its parent's certificate: the system's roots, plus
// a private CA (--parent-ca) when one is given.
func ClientTLS(caFile string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("parent CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("parent CA %s: no PEM certificate in it", caFile)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// HTTPSTransport is the default transport checking servers with cfg.
func HTTPSTransport(cfg *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	return t
}

// parentTransport checks the parent's certificate with cfg; nil cfg is plain http.
func parentTransport(cfg *tls.Config) http.RoundTripper {
	if cfg == nil {
		return nil
	}
	return HTTPSTransport(cfg)
}

// selfTransport reaches the node's own HTTPS listener over loopback, where the
// certificate's names need not match: it accepts exactly the node's own
// certificate, nothing else.
func (n *Node) selfTransport() http.RoundTripper {
	if n.tls == nil {
		return nil
	}
	own := n.tls.Certificates[0].Certificate[0]
	return HTTPSTransport(&tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the exact comparison below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return fmt.Errorf("tls: loopback peer is not this node")
			}
			return nil
		},
	})
}
