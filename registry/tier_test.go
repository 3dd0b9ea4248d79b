package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/outpost-edge/outpost/events"
)

// tierClock is the clock two members share, moved by the test.
type tierClock struct{ offset atomic.Int64 }

func (c *tierClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *tierClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// tierMembers starts two registries over one NATS server (one JetStream, one
// OUTPOST_TIER bucket) and one storage directory: two members of a root tier.
// each changes a member's Config.
func tierMembers(t *testing.T, clock *tierClock, each func(member string, bucket *events.Bucket, c *Config)) (a, b *testRegistry, bucket *events.Bucket) {
	t.Helper()
	dir := t.TempDir()
	ns, err := events.StartServer(events.ServerConfig{Dir: dir + "/nats", Addr: "127.0.0.1:0", Name: "testnode"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("tier-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if bucket, err = events.OpenBucket(context.Background(), nc, events.BucketTier); err != nil {
		t.Fatal(err)
	}
	start := func(member string) *testRegistry {
		return startRegistryOn(t, ns, dir, ReadWrite, func(c *Config) {
			c.Now = clock.now
			each(member, bucket, c)
		})
	}
	return start("a"), start("b"), bucket
}

// memberKeys is a member's key set, its key file under dir.
func memberKeys(t *testing.T, bucket *events.Bucket, dir, member string, clock *tierClock) *KeySet {
	t.Helper()
	ks, err := NewKeySet(context.Background(), KeySetConfig{Bucket: bucket, KeyFile: filepath.Join(dir, "token-key-"+member+".pem"),
		Member: member, RotateEvery: time.Hour, Refresh: time.Nanosecond, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// tokenAt asks a member's token endpoint for a pull token on team/app.
func tokenAt(t *testing.T, m *testRegistry) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, m.URL+TokenPath+"?service=testnode&scope=repository:team/app:pull", nil)
	req.SetBasicAuth("reader", "pw-reader")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token from %s: %s, %v", m.URL, resp.Status, err)
	}
	return out.Token
}

// pullWith lists team/app's tags at m with a registry token: "" if authorized (the
// repository is empty: 404), else the refusal.
func pullWith(t *testing.T, m *testRegistry, raw string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, m.URL+"/v2/team/app/tags/list", nil)
	req.Header.Set("Authorization", "Bearer "+raw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return ""
	}
	return fmt.Sprintf("%s %s", resp.Status, body)
}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// TestTierMembersAcceptEachOthersTokens: two members, each signing with its own
// key and publishing only the public key in the tier's set, accept each other's
// registry tokens; a token signed by a key outside the set is refused, saying so;
// a rotated key stays trusted until the last token it signed expired, signs
// nothing after its time, and then leaves the set.
func TestTierMembersAcceptEachOthersTokens(t *testing.T) {
	ctx := context.Background()
	clock := &tierClock{}
	keysDir := t.TempDir()
	auth := &staticAuth{users: map[string]Principal{"reader": {User: "reader", Actions: pullOn("team/")}}}
	keys := map[string]*KeySet{}
	a, b, bucket := tierMembers(t, clock, func(member string, bucket *events.Bucket, c *Config) {
		c.Auth = auth
		keys[member] = memberKeys(t, bucket, keysDir, member, clock)
		c.TokenKeys = keys[member]
	})
	// want checks an answer: accepted, or a 401 saying each of refusal.
	want := func(what, got string, refusal ...string) {
		t.Helper()
		if len(refusal) == 0 && got != "" {
			t.Errorf("%s: refused (%s), want accepted", what, got)
		}
		for _, r := range refusal {
			if !strings.Contains(got, "401") || !strings.Contains(got, r) {
				t.Errorf("%s: %q, want 401 saying %q", what, got, r)
			}
		}
	}

	fromA, fromB := tokenAt(t, a), tokenAt(t, b)
	if kidOf(t, fromA) == kidOf(t, fromB) {
		t.Fatalf("both members sign with key %s: want a key each", kidOf(t, fromA))
	}
	want("a token from member a at member b", pullWith(t, b, fromA))
	want("a token from member b at member a", pullWith(t, a, fromB))
	want("a token from member a at member a", pullWith(t, a, fromA))

	// A key outside the set: well-formed claims for this node, a kid of its own.
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := forger{t: t, service: "testnode", now: clock.now()}
	strangeKid := newSigningKey(stranger).Kid
	want("a token signed by a key outside the set", pullWith(t, b, f.sign(stranger, "reader", false,
		map[jose.HeaderKey]any{"kid": strangeKid})), strangeKid, "is not in this tier's key set")
	// A member's kid on a stranger's signature.
	want("a stranger's signature under member a's kid", pullWith(t, b, f.sign(stranger, "reader", false,
		map[jose.HeaderKey]any{"kid": kidOf(t, fromA)})), "bad signature for key")

	// Rotation: member a's key signs for an hour. A token from near its end...
	clock.advance(55 * time.Minute)
	oldKey, err := loadSigningKey(filepath.Join(keysDir, "token-key-a.pem"))
	if err != nil {
		t.Fatal(err)
	}
	late := tokenAt(t, a)
	oldKid := kidOf(t, late)
	// ...then past it: member a makes a new key, publishes it, signs with it.
	clock.advance(6 * time.Minute)
	rotated := tokenAt(t, a)
	if kidOf(t, rotated) == oldKid {
		t.Fatalf("member a still signs with %s after its hour", oldKid)
	}
	if onDisk, err := loadSigningKey(filepath.Join(keysDir, "token-key-a.pem")); err != nil || newSigningKey(onDisk).Kid != kidOf(t, rotated) {
		t.Errorf("member a's key file does not hold its new key (%v)", err)
	}
	want("member a's new key at member b", pullWith(t, b, rotated))
	want("a token of member a's old key, not expired yet, at member b", pullWith(t, b, late))
	// The old key is still in the set, but signs nothing new.
	clock.advance(2 * time.Minute)
	f.now = clock.now()
	want("a token the old key signed after its time", pullWith(t, b, f.sign(oldKey, "reader", false,
		map[jose.HeaderKey]any{"kid": oldKid})), "which stopped signing at")

	// Once its last token expired, the old key leaves the set.
	clock.advance(tokenLifetime + 2*time.Minute)
	f.now = clock.now()
	want("the old key after its last token expired", pullWith(t, b, f.sign(oldKey, "reader", false,
		map[jose.HeaderKey]any{"kid": oldKid})), "is not in this tier's key set")
	names, err := bucket.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, entryKey(oldKid)) {
		t.Errorf("the old key is still in the bucket: %v", names)
	}
	if !slices.Contains(names, entryKey(kidOf(t, rotated))) {
		t.Errorf("the set lost member a's current key: %v", names)
	}
	// Member b's first key is past its time too: b rotates at its next token.
	want("member b's token, after its own rotation, at member a", pullWith(t, a, tokenAt(t, b)))
}

// TestUploadStartedAtOneMemberContinuesAtAnother: members that share storage and
// the tier's upload secret continue each other's blob uploads; with a secret each
// (what every process had before), the second member refuses the upload.
func TestUploadStartedAtOneMemberContinuesAtAnother(t *testing.T) {
	ctx := context.Background()
	blob := []byte("a layer uploaded through two members")
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	upload := func(a, b *testRegistry) (int, string) {
		resp := a.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", "", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start the upload at the first member: %s", resp.Status)
		}
		loc := resp.Header.Get("Location")
		if i := strings.Index(loc, "/v2/"); i >= 0 {
			loc = loc[i:]
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		resp = b.do(t, http.MethodPut, loc+sep+"digest="+dgst, "application/octet-stream", blob)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// Control: a secret per member.
	a, b, _ := tierMembers(t, &tierClock{}, func(string, *events.Bucket, *Config) {})
	if status, body := upload(a, b); status != http.StatusNotFound || !strings.Contains(body, "invalid secret") {
		t.Fatalf("control: with a secret per member the second one answered %d %s, want 404 BLOB_UPLOAD_INVALID, invalid secret", status, body)
	}

	// The tier's secret: made once, by whichever member asks first.
	secrets := map[string]string{}
	a, b, _ = tierMembers(t, &tierClock{}, func(member string, bucket *events.Bucket, c *Config) {
		s, err := TierUploadSecret(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		secrets[member], c.UploadSecret = s, s
	})
	if secrets["a"] != secrets["b"] || len(secrets["a"]) < 32 {
		t.Fatalf("the members got different or short upload secrets: %q, %q", secrets["a"], secrets["b"])
	}
	if status, body := upload(a, b); status != http.StatusCreated {
		t.Fatalf("an upload started at member a, finished at member b: %d %s, want 201", status, body)
	}
	resp := a.do(t, http.MethodHead, "/v2/team/app/blobs/"+dgst, "", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the blob at member a after the upload finished at b: %s", resp.Status)
	}
}

// tierBucket starts a NATS server and opens the tier's bucket on it; dir holds the
// members' data.
func tierBucket(t *testing.T) (*events.Server, *events.Bucket, string) {
	t.Helper()
	dir := t.TempDir()
	ns, err := events.StartServer(events.ServerConfig{Dir: dir + "/nats", Addr: "127.0.0.1:0", Name: "testnode"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("tier-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bucket, err := events.OpenBucket(context.Background(), nc, events.BucketTier)
	if err != nil {
		t.Fatal(err)
	}
	return ns, bucket, dir
}

// TestKeySetKeepsItsLastReadWhileTheBucketIsAway: while JetStream does not answer
// (a leader change, a member's server gone), a member goes on verifying with the
// set it read last, without waiting on the bucket at every token.
func TestKeySetKeepsItsLastReadWhileTheBucketIsAway(t *testing.T) {
	ctx := context.Background()
	ns, bucket, dir := tierBucket(t)
	clock := &tierClock{}
	a, b := memberKeys(t, bucket, dir, "a", clock), memberKeys(t, bucket, dir, "b", clock)
	ka, err := a.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Trusted(ctx, ka.Kid); err != nil {
		t.Fatalf("member b, bucket up: %v", err)
	}
	b.cfg.Refresh = time.Hour // as in production: the set is read again after a while
	b.readAt = time.Time{}    // ...which is now
	ns.Shutdown()
	for i := range 3 {
		start := time.Now()
		if _, err := b.Trusted(ctx, ka.Kid); err != nil {
			t.Fatalf("member b, bucket away, check %d: %v", i, err)
		}
		if took := time.Since(start); i > 0 && took > 100*time.Millisecond {
			t.Errorf("check %d with the bucket away took %s: want the last read, at once", i, took)
		}
	}
}

// TestKeySetLearnsOtherMembersKeysAsTheyArePublished: a member's key published
// after another member read the set is known there at once, by the watch, without
// a read of the set; and stays known with the bucket away. Before, the other
// member learned it at its next read only, so a member killed within the refresh
// left tokens the survivors refused while the tier's bucket was electing a leader.
func TestKeySetLearnsOtherMembersKeysAsTheyArePublished(t *testing.T) {
	ctx := context.Background()
	ns, bucket, dir := tierBucket(t)
	clock := &tierClock{}
	a := memberKeys(t, bucket, dir, "a", clock)
	a.mu.Lock()
	a.cfg.Refresh, a.readAt = time.Hour, time.Now() // no read of the set from here on
	readAt := a.readAt
	a.mu.Unlock()
	b := memberKeys(t, bucket, dir, "b", clock)
	kb, err := b.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past keyReloadEvery: a read would be allowed, so check none happened
	if _, err := a.Trusted(ctx, kb.Kid); err != nil {
		t.Fatalf("member a, for member b's key published after a's read: %v", err)
	}
	a.mu.Lock()
	if !a.readAt.Equal(readAt) {
		t.Errorf("member a read the set again to trust b's key: want it learned from the watch")
	}
	a.mu.Unlock()
	ns.Shutdown()
	if _, err := a.Trusted(ctx, kb.Kid); err != nil {
		t.Fatalf("member a, bucket away: %v", err)
	}
}

// A key removed from the tier's bucket is no longer trusted at once, by the watch,
// without a read of the set. The watch took the bucket's key name (the kid
// base64-encoded) for the kid and removed nothing: the key stayed trusted until
// the next read of the set.
func TestKeySetForgetsRemovedKeysAsTheyAreRemoved(t *testing.T) {
	ctx := context.Background()
	_, bucket, dir := tierBucket(t)
	clock := &tierClock{}
	a := memberKeys(t, bucket, dir, "a", clock)
	b := memberKeys(t, bucket, dir, "b", clock)
	kb, err := b.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Trusted(ctx, kb.Kid); err != nil {
		t.Fatalf("member a, for member b's key: %v", err)
	}
	a.mu.Lock()
	a.cfg.Refresh, a.readAt = time.Hour, time.Now() // no read of the set from here on
	a.mu.Unlock()
	if err := bucket.Delete(ctx, entryKey(kb.Kid)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		_, held := a.set[kb.Kid]
		a.mu.Unlock()
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("member a still holds member b's key 5 s after it was removed from the bucket")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
