package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// testSecret is the route secret of the test clusters.
const testSecret = "route-secret-0123456789"

// freePorts reserves n free ports on 127.0.0.1: members started at once must
// know each other's route addresses before any listens.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// testLogger writes to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// clusterConfigs is the configuration of n members of one cluster on 127.0.0.1,
// each route list naming every member (itself included, as an operator's would).
func clusterConfigs(t *testing.T, n int) []ServerConfig {
	t.Helper()
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", p))
	}
	var out []ServerConfig
	for i := range n {
		out = append(out, ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "root", Cluster: &ClusterConfig{
			Name: "tier", Listen: routes[i], Routes: routes, Secret: testSecret,
			StartupTimeout: 20 * time.Second, Logger: testLogger(t).With("member", i),
		}})
	}
	return out
}

// startMembers starts every member at once, as three roots started together.
func startMembers(t *testing.T, cfgs []ServerConfig) ([]*Server, []error) {
	t.Helper()
	servers := make([]*Server, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Go(func() { servers[i], errs[i] = StartServer(cfgs[i]) })
	}
	wg.Wait()
	for _, s := range servers {
		if s != nil {
			t.Cleanup(s.Shutdown)
		}
	}
	return servers, errs
}

func startCluster(t *testing.T, n int) []*Server {
	t.Helper()
	servers, errs := startMembers(t, clusterConfigs(t, n))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	return servers
}

func openMemberLog(t *testing.T, s *Server) *Log {
	t.Helper()
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := OpenLog(context.Background(), nc, LogConfig{Placement: s.Placement()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkFor polls fn until it returns nil, failing with its last error.
func checkFor(t *testing.T, total time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three members started at once all come up (before, all three exited: stream
// creation timed out while the cluster elected), and every stream and bucket the
// node makes has three copies.
func TestClusterThreeStartAtOnce(t *testing.T) {
	start := time.Now()
	servers := startCluster(t, 3)
	t.Logf("three members up, meta leader elected, in %s", time.Since(start).Round(time.Millisecond))
	names := map[string]bool{}
	for i, s := range servers {
		if err := s.Healthy(); err != nil {
			t.Errorf("member %d not healthy: %v", i, err)
		}
		st := s.ClusterStatus()
		if st.Leader == "" || st.Size != 3 {
			t.Errorf("member %d: %+v, want a leader and 3 members", i, st)
		}
		names[st.Self] = true
		if p := s.Placement(); p.Replicas != 3 {
			t.Errorf("member %d: placement %d replicas, want 3", i, p.Replicas)
		}
	}
	if len(names) != 3 {
		t.Errorf("server names %v: want 3 distinct", names)
	}
	// All three open the log, an outbox and a bucket at once, as three nodes do.
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, s := range servers {
		wg.Go(func() {
			nc, err := s.Connect("test")
			if err != nil {
				errs[i] = err
				return
			}
			defer nc.Close()
			p := s.Placement()
			if _, err := OpenLog(ctx, nc, LogConfig{Placement: p}); err != nil {
				errs[i] = err
				return
			}
			if _, err := OpenOutbox(ctx, nc, DownstreamOutbox("child1"), DefaultMessageTTL, WithPlacement(p)); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = OpenBucket(ctx, nc, BucketNodes, WithPlacement(p))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	t.Logf("log, outbox and bucket open at all three %s after start", time.Since(start).Round(time.Millisecond))
	nc, err := servers[0].Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{StreamName, DownstreamOutbox("child1"), "KV_" + BucketNodes} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas (%+v), want 3", name, info.Config.Replicas, info.Cluster)
		}
	}
	// A caller that names no placement is refused a new stream (it would have one
	// copy, on one member), and leaves an existing one's copies as they are.
	if _, err := OpenOutbox(ctx, nc, DownstreamOutbox("child2"), DefaultMessageTTL); !errors.Is(err, ErrNoPlacement) {
		t.Errorf("a new outbox without placement in a cluster: %v; want ErrNoPlacement", err)
	}
	if _, err := OpenBucket(ctx, nc, "OUTPOST_OTHER"); !errors.Is(err, ErrNoPlacement) {
		t.Errorf("a new bucket without placement in a cluster: %v; want ErrNoPlacement", err)
	}
	if _, err := OpenOutbox(ctx, nc, DownstreamOutbox("child1"), DefaultMessageTTL); err != nil {
		t.Fatal(err)
	}
	if st, err := js.Stream(ctx, DownstreamOutbox("child1")); err != nil || st.CachedInfo().Config.Replicas != 3 {
		t.Errorf("outbox opened without placement: %v, want it kept at 3 replicas", err)
	}
}

// The leader of the event log's stream stops during a burst of publishes through
// the Log API at the two other members: every publish succeeds (it retries across
// the leader change with the event id as message id), and every acknowledged event
// is in the log exactly once.
func TestClusterPublishAcrossLeaderChange(t *testing.T) {
	servers := startCluster(t, 3)
	logs := make([]*Log, 3)
	for i, s := range servers {
		logs[i] = openMemberLog(t, s)
	}
	leader := -1
	checkFor(t, 10*time.Second, func() error {
		for i, s := range servers {
			if s.ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, StreamName) {
				leader = i
				return nil
			}
		}
		return errors.New("the EVENTS stream has no leader")
	})
	// An outbox led by the same member, so that the stop changes its leader too:
	// the router's appends retry as the log's publishes do.
	ctx := context.Background()
	outboxes := make([]*Outbox, 3)
	for i, s := range servers {
		nc, err := s.Connect("router")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if outboxes[i], err = OpenOutbox(ctx, nc, DownstreamOutbox("child1"), DefaultMessageTTL, WithPlacement(s.Placement())); err != nil {
			t.Fatal(err)
		}
	}
	leaderName := servers[leader].ClusterStatus().Self
	checkFor(t, 10*time.Second, func() error {
		if servers[leader].ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, DownstreamOutbox("child1")) {
			return nil
		}
		nc := servers[(leader+1)%3]
		conn, err := nc.Connect("stepdown")
		if err != nil {
			return err
		}
		defer conn.Close()
		_, _ = conn.Request("$JS.API.STREAM.LEADER.STEPDOWN."+DownstreamOutbox("child1"),
			[]byte(`{"placement":{"preferred":"`+leaderName+`"}}`), 2*time.Second)
		return fmt.Errorf("the outbox is not led by %s yet", leaderName)
	})
	var (
		mu       sync.Mutex
		acked    []string
		appended []string
		pubErrs  []error
		slowest  time.Duration
		killed   atomic.Bool
		after    atomic.Int64 // acks since the kill
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i, l := range logs {
		if i == leader {
			continue
		}
		for w := range 2 {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					e := &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprintf("m%d-w%d-%d", i, w, n), Digest: "sha256:00", Origin: "root"}
					begin := time.Now()
					err := l.Publish(ctx, e)
					var appendErr error
					if err == nil {
						appendErr = outboxes[i].Append(ctx, e, e.ID+".child1")
					}
					took := time.Since(begin)
					mu.Lock()
					if err != nil {
						pubErrs = append(pubErrs, err)
					} else {
						acked = append(acked, e.ID)
						if killed.Load() {
							after.Add(1)
						}
					}
					if appendErr != nil {
						pubErrs = append(pubErrs, appendErr)
					} else if err == nil {
						appended = append(appended, e.ID)
					}
					slowest = max(slowest, took)
					mu.Unlock()
				}
			})
		}
	}
	checkFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 200 {
			return fmt.Errorf("%d events acked before the kill, want 200", len(acked))
		}
		return nil
	})
	killedAt := time.Now()
	servers[leader].Shutdown()
	killed.Store(true)
	checkFor(t, 20*time.Second, func() error {
		if n := after.Load(); n < 200 {
			return fmt.Errorf("%d events acked since the leader stopped, want 200", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("leader (member %d) stopped; 200 acks after it in %s; %d acked in all; slowest publish %s",
		leader, time.Since(killedAt).Round(time.Millisecond), len(acked), slowest.Round(time.Millisecond))
	if len(pubErrs) > 0 {
		t.Errorf("%d publishes failed across the leader change, first: %v", len(pubErrs), pubErrs[0])
	}
	survivor := logs[(leader+1)%3]
	var seen map[string]int
	// Right after a leader change a read may stall (its consumer waits for the new
	// leader): it says so, and the next one reads.
	checkFor(t, 20*time.Second, func() error {
		seen = map[string]int{}
		return survivor.Read(ctx, ReadOptions{}, func(e *Event) error {
			seen[e.ID]++
			return nil
		})
	})
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	for _, id := range acked {
		if seen[id] != 1 {
			t.Errorf("acked event %s stored %d times, want 1", id, seen[id])
		}
	}
	t.Logf("%d events in the log, %d acked, each acked one once", len(seen), len(acked))

	// The outbox holds each acked append once.
	nc, err := servers[(leader+1)%3].Connect("drain")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q, err := OpenQueue(ctx, nc, DownstreamOutbox("child1"))
	if err != nil {
		t.Fatal(err)
	}
	inOutbox := map[string]int{}
	for {
		ds, err := q.NextBatch(ctx, MaxBatch, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			inOutbox[d.Event.ID]++
			_ = d.AckAsync()
		}
	}
	for id, n := range inOutbox {
		if n != 1 {
			t.Errorf("outbox holds event %s %d times", id, n)
		}
	}
	for _, id := range appended {
		if inOutbox[id] != 1 {
			t.Errorf("acked append %s in the outbox %d times, want 1", id, inOutbox[id])
		}
	}
	t.Logf("%d appends acked, %d messages in the outbox, each acked one once", len(appended), len(inOutbox))
}

// A member whose two peers stopped says it has no quorum, naming what is missing.
func TestClusterHealthWithoutQuorum(t *testing.T) {
	servers := startCluster(t, 3)
	if err := servers[0].Healthy(); err != nil {
		t.Fatalf("before: %v", err)
	}
	servers[1].Shutdown()
	// One member down: two of three are a quorum.
	checkFor(t, 15*time.Second, func() error { return servers[0].Healthy() })
	servers[2].Shutdown()
	var last error
	checkFor(t, 20*time.Second, func() error {
		last = servers[0].Healthy()
		if last == nil || !strings.Contains(last.Error(), "reaches 0 other member(s)") {
			return fmt.Errorf("alone, health says %v", last)
		}
		return nil
	})
	msg := last.Error()
	if !errors.Is(last, ErrNoQuorum) || !strings.Contains(msg, "cluster tier") || !strings.Contains(msg, "reaches 0 other member(s)") ||
		!strings.Contains(msg, "a quorum is 2 of 3") {
		t.Errorf("health without quorum: %q; want ErrNoQuorum naming the cluster, the members reached and the quorum", msg)
	}
	t.Logf("without quorum: %v", last)
}

// fakeClock advances by each wait it is asked for, at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

// A member started alone, its peers never coming, waits out its startup timeout
// (on the injected clock) and says what it waited for.
func TestClusterStartupTimeout(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	cfg := cfgs[0]
	cfg.Cluster.StartupTimeout, cfg.Cluster.Now, cfg.Cluster.After = time.Minute, clock.Now, clock.After
	start := time.Now()
	s, err := StartServer(cfg)
	if err == nil {
		s.Shutdown()
		t.Fatal("a member alone of three started")
	}
	msg := err.Error()
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(msg, "gave up after 1m0s") || !strings.Contains(msg, "no meta leader") ||
		!strings.Contains(msg, "start the other members") {
		t.Errorf("startup alone: %q; want ErrNoQuorum saying it gave up after 1m0s without a meta leader", msg)
	}
	t.Logf("gave up in %s of real time: %v", time.Since(start).Round(time.Millisecond), err)
}

// Members with different route secrets never form a cluster.
func TestClusterRouteSecret(t *testing.T) {
	cfgs := clusterConfigs(t, 2)
	cfgs[1].Cluster.Secret = "another-secret-9876543210"
	for _, c := range cfgs {
		c.Cluster.StartupTimeout = 3 * time.Second
	}
	_, errs := startMembers(t, cfgs)
	// The count of members reached is not checked: nats-server lists a route it is
	// still authenticating, for a moment, before the other end refuses it.
	for i, err := range errs {
		if err == nil || !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "no meta leader elected") {
			t.Errorf("member %d with a route secret the other does not share: %v; want no quorum, no meta leader", i, err)
		}
	}
}

// A member keeps its server name across restarts, refuses another one, and a
// store a standalone server made is never turned into a member's.
func TestClusterServerNameAndStandaloneStore(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	servers, errs := startMembers(t, cfgs)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	name := servers[0].ClusterStatus().Self
	servers[0].Shutdown()
	if !strings.HasPrefix(name, "root-") {
		t.Errorf("server name %q, want root-<random>", name)
	}
	s, err := StartServer(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if again := s.ClusterStatus().Self; again != name {
		t.Errorf("after a restart the member is %q, was %q", again, name)
	}
	s.Shutdown()
	other := cfgs[0]
	c := *other.Cluster
	c.ServerName = "other"
	other.Cluster = &c
	if _, err := StartServer(other); err == nil || !strings.Contains(err.Error(), `belongs to member "`+name+`"`) {
		t.Errorf("another server name on the store: %v; want a refusal naming the store's member", err)
	}

	dir := t.TempDir()
	single, err := StartServer(ServerConfig{Dir: dir, Addr: "127.0.0.1:0", Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := single.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLog(context.Background(), nc, LogConfig{}); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	single.Shutdown()
	member := cfgs[0]
	member.Dir = dir
	if _, err := StartServer(member); err == nil || !strings.Contains(err.Error(), "delete as orphans") {
		t.Errorf("a standalone store as a member's: %v; want a refusal saying why", err)
	}
}

// Streams made with one copy (a tier that had one member) get three once the
// placement says three, and keep their events.
func TestClusterReplicasGrow(t *testing.T) {
	servers := startCluster(t, 3)
	nc, err := servers[0].Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	one := servers[0].Placement()
	one.Replicas = 1
	l, err := OpenLog(ctx, nc, LogConfig{Placement: one})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenBucket(ctx, nc, BucketTokens, WithPlacement(one)); err != nil {
		t.Fatal(err)
	}
	l, err = OpenLog(ctx, nc, LogConfig{Placement: servers[0].Placement()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBucket(ctx, nc, BucketTokens, WithPlacement(servers[0].Placement())); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for _, name := range []string{StreamName, "KV_" + BucketTokens} {
		checkFor(t, 10*time.Second, func() error {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			if info := st.CachedInfo(); info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("stream %s: %d replicas, %d peers besides the leader; want 3", name, info.Config.Replicas, len(info.Cluster.Replicas))
			}
			return nil
		})
	}
	st, err := l.Stats(ctx)
	if err != nil || st.Messages != 10 {
		t.Errorf("after growing to 3 replicas: %+v, %v; want the 10 events", st, err)
	}
}

func TestClusterConfigValidate(t *testing.T) {
	ok := ClusterConfig{Name: "tier", Secret: testSecret, Routes: []string{"10.0.0.1:6222", "nats-route://10.0.0.2:6222"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if d := ok.withDefaults(); d.Replicas != 3 || d.Listen != "127.0.0.1:6222" {
		t.Errorf("defaults: replicas %d listen %s; want 3 and 127.0.0.1:6222", d.Replicas, d.Listen)
	}
	self := ok
	self.Routes = append([]string{"127.0.0.1:6222"}, "10.0.0.1:6222")
	if d := self.withDefaults(); d.Replicas != 2 {
		t.Errorf("routes naming this member and one other: %d replicas, want 2", d.Replicas)
	}
	for _, tc := range []struct {
		change func(*ClusterConfig)
		want   string
	}{
		{func(c *ClusterConfig) { c.Name = "" }, "name is empty"},
		{func(c *ClusterConfig) { c.Name = "a.b" }, "no spaces, dots"},
		{func(c *ClusterConfig) { c.Secret = "short" }, "route secret: 5 characters, want at least 16"},
		{func(c *ClusterConfig) { c.Listen = "6222" }, `listen address "6222": want host:port`},
		{func(c *ClusterConfig) { c.Listen = ":6222" }, "host is empty"},
		{func(c *ClusterConfig) { c.Routes = []string{"nats-route://u:p@10.0.0.1:6222"} }, "carries a credential"},
		{func(c *ClusterConfig) { c.Routes = []string{"http://10.0.0.1:6222"} }, `scheme "http"`},
		{func(c *ClusterConfig) { c.Routes = []string{"10.0.0.1:70000"} }, "port must be 0 to 65535"},
		{func(c *ClusterConfig) { c.CertFile = "cert.pem" }, "needs all three of cert, key and CA"},
		{func(c *ClusterConfig) { c.Replicas = 7 }, "replicas 7: must be 1 to 5"},
		{func(c *ClusterConfig) { c.Routes = []string{"127.0.0.1:6222"} }, "the routes name no other member"},
		{func(c *ClusterConfig) { c.Routes = c.Routes[:1]; c.Replicas = 3 }, "replicas 3: the routes name 2 members"},
		{func(c *ClusterConfig) { c.PublishTimeout = 3 * time.Minute }, "below the 2m0s dedupe window"},
		{func(c *ClusterConfig) { c.ServerName = "a b" }, `server name "a b"`},
	} {
		c := ok
		c.Routes = append([]string(nil), ok.Routes...)
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want an error containing %q", c, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), c.Secret) && len(c.Secret) >= minSecret {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	p := RetryPolicy{Timeout: 10 * time.Second, Now: clock.Now, After: clock.After, Logger: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	calls := 0
	err := p.do(ctx, "publish", func(context.Context) error {
		calls++
		if calls < 4 {
			return jetstream.ErrNoStreamResponse
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Errorf("three transient failures then success: %v after %d calls", err, calls)
	}
	calls = 0
	bad := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}
	err = p.do(ctx, "create", func(context.Context) error { calls++; return bad })
	if calls != 1 || IsRetryable(err) || !errors.Is(err, bad) {
		t.Errorf("a bad request: %v after %d calls; want it returned at once, not retryable", err, calls)
	}
	calls = 0
	err = p.do(ctx, "publish", func(context.Context) error { calls++; return &jetstream.APIError{Code: 503, ErrorCode: 10008} })
	if !IsRetryable(err) || !strings.Contains(err.Error(), "gave up after") || calls < 5 {
		t.Errorf("a cluster that never comes back: %v after %d calls; want a retryable error saying it gave up", err, calls)
	}
	if err := (RetryPolicy{}).do(ctx, "publish", func(context.Context) error { return context.DeadlineExceeded }); !IsRetryable(err) {
		t.Errorf("zero policy: %v; want one attempt, its timeout marked retryable", err)
	}
}

// A member restarted while the others took events opens the log without finding
// damage: the check at open reads the replicated stream, whatever this member's
// copy still lacks.
func TestClusterMemberRestartOpensLog(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	servers, errs := startMembers(t, cfgs)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	l := openMemberLog(t, servers[1])
	publish := func(n int) {
		for i := range n {
			if err := l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(100)
	servers[0].Shutdown()
	publish(100)
	s, err := StartServer(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec := filepath.Join(t.TempDir(), "events-log.json")
	l0, err := OpenLog(ctx, nc, LogConfig{Placement: s.Placement(), RecordFile: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer l0.Close()
	if d := l0.Damage(); d != nil {
		t.Errorf("restarted member found the log damaged: %v", d)
	}
	if st, err := l0.Stats(ctx); err != nil || st.Messages != 200 {
		t.Errorf("restarted member: %+v, %v; want 200 events", st, err)
	}
}
