package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memberEnv carries a member's configuration to TestHelperClusterMember.
const memberEnv = "OUTPOST_EVENTS_TEST_MEMBER"

// TestHelperClusterMember is not a test: it is a member of a test's cluster run
// in its own process, so that the test can SIGKILL it. A killed member sends no
// shutdown notice: the others count it as holding a copy until they find it gone
// (minutes, in nats-server v2.15), as after a power cut.
func TestHelperClusterMember(t *testing.T) {
	spec := os.Getenv(memberEnv)
	if spec == "" {
		t.Skip("run by tests that kill a cluster member")
	}
	var m killableMember
	if err := json.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	s, err := StartServer(ServerConfig{Dir: m.Dir, Addr: m.Addr, Name: m.Name, Cluster: &ClusterConfig{
		Name: m.Cluster, Listen: m.Listen, Routes: m.Routes, Secret: testSecret, StartupTimeout: m.StartupTimeout,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
}

// killableMember is what TestHelperClusterMember is told of its member.
type killableMember struct {
	Dir, Addr, Name, Cluster, Listen string
	Routes                           []string
	StartupTimeout                   time.Duration
}

// startKillableMember starts cfg as a member in a process of its own, and
// returns the function that SIGKILLs it.
func startKillableMember(t *testing.T, cfg ServerConfig) (kill func()) {
	t.Helper()
	c := cfg.Cluster
	// The secret stays out of the environment: the helper knows testSecret.
	spec, err := json.Marshal(killableMember{Dir: cfg.Dir, Addr: cfg.Addr, Name: cfg.Name,
		Cluster: c.Name, Listen: c.Listen, Routes: c.Routes, StartupTimeout: c.StartupTimeout})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClusterMember$", "-test.v")
	cmd.Env = append(os.Environ(), memberEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	return kill
}

// A read of the log in a cluster delivers every event right after a member was
// SIGKILLed. Its consumer may be placed on the killed member, which the others
// still count as holding a copy: that read delivered nothing, stalled, and
// `outpost events` failed (a CI run, 11 s after a kill). A stalled read in a
// cluster now starts a new consumer where it stopped.
func TestClusterReadAfterMemberKilled(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	var kill func()
	var servers []*Server
	var errs []error
	var wg sync.WaitGroup
	wg.Go(func() { servers, errs = startMembers(t, cfgs[:2]) })
	kill = startKillableMember(t, cfgs[2])
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	ctx := context.Background()
	logs := make([]*Log, len(servers))
	for i, s := range servers {
		nc, err := s.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		// A stalled read is given up after ReadIdle: short, so the test is quick.
		if logs[i], err = OpenLog(ctx, nc, LogConfig{Placement: s.Placement(), ReadIdle: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	const events = 30
	for i := range events {
		if err := logs[0].Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	// Every copy holds every event, the killed member's too.
	checkFor(t, 20*time.Second, func() error {
		for i, s := range servers {
			if !s.caughtUp(StreamName, events) {
				return fmt.Errorf("member %d has not caught up to %d events", i, events)
			}
		}
		return nil
	})
	kill()
	killed := time.Now()

	// Each read makes a consumer, placed at random among the copies: without the
	// new consumer, one of three reads stalled.
	const reads = 12
	var stalled int
	for r := range reads {
		l := logs[r%len(logs)]
		var got int
		start := time.Now()
		err := l.Read(ctx, ReadOptions{}, func(*Event) error { got++; return nil })
		if err != nil || got != events {
			t.Errorf("read %d at member %d, %s after the kill: %d of %d events, %v", r, r%len(logs), start.Sub(killed).Round(time.Millisecond), got, events, err)
		}
		if d := time.Since(start); d >= time.Second {
			stalled++
			t.Logf("read %d at member %d took %s (a call to, or a consumer on, the killed member: made again)", r, r%len(logs), d.Round(time.Millisecond))
		}
	}
	t.Logf("%d reads after the kill, each of %d events; %d took a second or more", reads, events, stalled)
}

// A write acknowledged at one member is read at once by every member: Get, and
// Keys. A bucket's reads were answered by any copy (direct gets, a consumer placed
// anywhere), and a copy a moment behind missed the write: `outpost node create`
// at a tier answered "not found: node siterw", from the read after its own write.
// In a cluster a bucket reads from its leader.
func TestClusterBucketReadsItsWrites(t *testing.T) {
	servers := startCluster(t, 3)
	ctx := context.Background()
	buckets := make([]*Bucket, len(servers))
	for i, s := range servers {
		nc, err := s.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if buckets[i], err = OpenBucket(ctx, nc, "READS", WithPlacement(s.Placement())); err != nil {
			t.Fatal(err)
		}
	}
	const writes = 150
	var missed []string
	for i := range writes {
		key := fmt.Sprintf("k%03d", i)
		w := buckets[i%len(buckets)]
		if err := w.Put(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
		for j, b := range buckets {
			if v, _, err := b.Get(ctx, key); err != nil || string(v) != key {
				missed = append(missed, fmt.Sprintf("get %s at member %d: %q, %v", key, j, v, err))
			}
		}
		// Keys, at the member after the writer's.
		keys, err := buckets[(i+1)%len(buckets)].Keys(ctx)
		if err != nil || len(keys) != i+1 {
			missed = append(missed, fmt.Sprintf("keys after writing %s at member %d: %d keys, %v", key, (i+1)%len(buckets), len(keys), err))
		}
	}
	// A key deleted is gone at once too.
	if err := buckets[0].Delete(ctx, "k000"); err != nil {
		t.Fatal(err)
	}
	for j, b := range buckets {
		if _, _, err := b.Get(ctx, "k000"); !errors.Is(err, ErrKeyNotFound) {
			missed = append(missed, fmt.Sprintf("get k000 at member %d after its delete: %v, want ErrKeyNotFound", j, err))
		}
	}
	if len(missed) > 0 {
		t.Errorf("%d reads of %d writes missed them, e.g. %v", len(missed), writes, missed[:min(5, len(missed))])
	}
}
