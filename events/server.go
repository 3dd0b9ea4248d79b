package events

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures a node's embedded NATS server.
type ServerConfig struct {
	// Dir holds the JetStream store. Required.
	Dir string
	// Addr is the gateway listener, host:port; port 0 picks a free port.
	Addr string
	// Name identifies the server; it must stay the same across restarts.
	Name string
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10 s.
	ReadyTimeout time.Duration
	// TLS, when set, is required of every network client (children); the node's
	// own in-process connection does without.
	TLS *tls.Config
	// Cluster, when set, makes the server a member of a JetStream cluster (a root
	// tier's members); Name is then only the default of its server name. Nil: the
	// server stands alone, as every site and a single root do.
	Cluster *ClusterConfig
}

// Server is a node's embedded NATS server with JetStream.
type Server struct {
	ns       *server.Server
	user     string
	password string
	children atomic.Pointer[ChildAuthenticator]
	failed   *LoginLimiter

	accountsMu sync.Mutex
	accounts   map[string]*server.Account // child name -> its wired account

	cluster *ClusterConfig // with defaults; nil for a server that stands alone
}

// ChildAuthenticator says which child node, if any, a gateway login belongs to,
// and whether the process instance that logs in is the one active for it.
type ChildAuthenticator interface {
	AuthenticateChild(user, password, instance string) (ChildLogin, bool)
}

// ChildLogin is an accepted child login.
type ChildLogin struct {
	Child string
	// Active is false for a process instance the child's definition does not name
	// (one about to activate, or one fenced): it may only send control requests.
	Active bool
}

// SetChildAuthenticator lets children log in at the gateway. Until it is called only
// the node itself can.
func (s *Server) SetChildAuthenticator(a ChildAuthenticator) { s.children.Store(&a) }

// Check implements the nats-server's custom authentication: the node's own
// in-process connection gets everything in the node's account, a child logs in to an
// account of its own that reaches only its own outbox and control subjects.
func (s *Server) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o.Username == s.user {
		if subtle.ConstantTimeCompare([]byte(o.Password), []byte(s.password)) != 1 {
			return false
		}
		c.RegisterUser(&server.User{Username: s.user, Account: s.ns.GlobalAccount()})
		return true
	}
	a := s.children.Load()
	if a == nil {
		return false
	}
	addr := remoteHost(c)
	if _, limited := s.failed.Limited(addr); limited {
		return false // not even checked: bcrypt is the cost an attacker wants us to pay
	}
	instance := InstanceOfConn(o.Name)
	if ValidInstance(instance) != nil {
		return false // its inbox prefix is made of it: no instance, no login
	}
	login, ok := (*a).AuthenticateChild(o.Username, o.Password, instance)
	if !ok {
		s.failed.Failed(addr)
		return false
	}
	acc, err := s.childAccount(login.Child)
	if err != nil {
		s.ns.Errorf("outpost: child %s: %v", login.Child, err)
		return false
	}
	// Inside its own account the child is held to the imported subjects and its own
	// inbox too: its account holds nothing else, but a login does no more than it must.
	pub, sub := childPermissions(login.Child, instance, login.Active)
	c.RegisterUser(&server.User{Username: o.Username, Account: acc, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}})
	return true
}

// childAccount returns child's account, made on its first login: it has no
// JetStream of its own and imports childServices from the node's account, which
// exports each to this account alone.
func (s *Server) childAccount(child string) (*server.Account, error) {
	s.accountsMu.Lock()
	defer s.accountsMu.Unlock()
	if acc, ok := s.accounts[child]; ok {
		return acc, nil
	}
	node := s.ns.GlobalAccount()
	acc, _ := s.ns.LookupOrRegisterAccount(childAccountName(child))
	for _, svc := range childServices(child) {
		rt := server.Singleton
		if svc.streamed {
			rt = server.Streamed
		}
		if err := node.AddServiceExportWithResponse(svc.subject, rt, []*server.Account{acc}); err != nil {
			return nil, fmt.Errorf("export %s: %w", svc.subject, err)
		}
		if err := acc.AddServiceImport(node, svc.subject, svc.subject); err != nil {
			return nil, fmt.Errorf("import %s: %w", svc.subject, err)
		}
	}
	if s.accounts == nil {
		s.accounts = map[string]*server.Account{}
	}
	s.accounts[child] = acc
	return acc, nil
}

// nodeUser is the account the node's own in-process connection uses. Its password is
// random per process: nothing on the network can log in as the node.
const nodeUser = "outpost-node"

// StartServer starts the embedded NATS server and waits until it accepts
// connections. A cluster member then waits, up to its StartupTimeout, for the
// cluster to elect a meta leader.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("nats server: store directory is empty")
	}
	if cfg.Name == "" {
		return nil, errors.New("nats server: name is empty")
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("nats server: gateway address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("nats server: gateway address %q: port must be 0 to 65535", cfg.Addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("nats server: node password: %w", err)
	}
	s := &Server{user: nodeUser, password: hex.EncodeToString(pw), failed: NewLoginLimiter()}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true,
	}
	opts.CustomClientAuthentication = s
	if cfg.Cluster != nil {
		if err := cfg.Cluster.Validate(); err != nil {
			return nil, fmt.Errorf("nats server: %w", err)
		}
		c := cfg.Cluster.withDefaults()
		if standaloneStore(cfg.Dir) {
			return nil, fmt.Errorf("nats server: cluster %s: %s holds the streams of a server that stood alone, which a cluster member would delete as orphans: start members on empty stores (see docs/architecture.md, A JetStream cluster for the root tier)", c.Name, cfg.Dir)
		}
		if opts.ServerName, err = serverName(cfg.Dir, c.ServerName, cfg.Name); err != nil {
			return nil, fmt.Errorf("nats server: %w", err)
		}
		if err := applyCluster(opts, c); err != nil {
			return nil, fmt.Errorf("nats server: %w", err)
		}
		s.cluster = &c
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLSTimeout = 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	s.ns = ns // before Start: Check may run as soon as it listens
	if s.cluster != nil {
		ns.SetLoggerV2(serverLogger{s.cluster.Logger.With("nats-server", s.cluster.Name)}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		inUse := cfg.Addr
		if s.cluster != nil {
			inUse += " or " + s.cluster.Listen
		}
		return nil, fmt.Errorf("nats server: not ready after %s (is %s in use?)", cfg.ReadyTimeout, inUse)
	}
	if s.cluster != nil {
		if err := s.waitForCluster(); err != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, err
		}
	}
	return s, nil
}

// Connect opens an in-process client connection as the node.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s.ns), nats.UserInfo(s.user, s.password),
		nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// Addr is the gateway listener's address.
func (s *Server) Addr() net.Addr { return s.ns.Addr() }

// Running reports whether the server and JetStream are up.
func (s *Server) Running() bool { return s.ns.Running() && s.ns.JetStreamEnabled() }

// Shutdown stops the server and flushes JetStream to disk.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// DisconnectChild closes the gateway connections of user (a child's sync token)
// whose process instance keep refuses: a pull in progress stops, and the next login
// is checked again. It returns how many it closed.
func (s *Server) DisconnectChild(user string, keep func(instance string) bool) int {
	cz, err := s.ns.Connz(&server.ConnzOptions{Username: true, User: user, Limit: 1 << 16})
	if err != nil {
		return 0
	}
	closed := 0
	for _, c := range cz.Conns {
		if keep(InstanceOfConn(c.Name)) {
			continue
		}
		if s.ns.DisconnectClientByID(c.Cid) == nil {
			closed++
		}
	}
	return closed
}

// remoteHost is a client's address without its port.
func remoteHost(c server.ClientAuthentication) string {
	a := c.RemoteAddress()
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
