package hierarchy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// TestAdminTokenBelongsToTheTier: the admin token's bcrypt hash lives in the tier's
// bucket. A single root's token from before (hash in OUTPOST_LOCAL, token in
// DATA/admin-token) moves there and keeps working; a member started with no copy of
// the token accepts it; a member given another token refuses to start, saying why;
// members started at once on an empty tier make one token between them.
func TestAdminTokenBelongsToTheTier(t *testing.T) {
	ctx := context.Background()
	f := startRoot(t)
	open := func(name string) *events.Bucket {
		b, err := events.OpenBucket(ctx, f.nc, name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tier, local := open(events.BucketTier), open(events.BucketLocal)

	// A root from before tiers: its hash in OUTPOST_LOCAL, its token in its file.
	old := filepath.Join(t.TempDir(), "admin-token")
	h, err := HashPassword("legacy-admin-token", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Put(ctx, adminTokenKey, h.Hash); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("legacy-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := SetupAdminToken(ctx, AdminTokenConfig{Tier: tier, Local: local, File: old})
	if err != nil {
		t.Fatalf("the single root's token after the upgrade: %v", err)
	}
	if !a.Verify("legacy-admin-token") || a.Verify("legacy-admin-token2") || a.Verify("") {
		t.Errorf("member a: the legacy token is not accepted, or another is")
	}
	stored, _, err := tier.Get(ctx, adminTokenKey)
	if err != nil || !bytes.HasPrefix(stored, []byte("$2")) || bytes.Contains(stored, []byte("legacy-admin-token")) {
		t.Fatalf("the tier's admin token at rest: %q, %v: want a bcrypt hash", stored, err)
	}

	// A second member, on a data directory of its own without the token.
	b, err := SetupAdminToken(ctx, AdminTokenConfig{Tier: tier, File: filepath.Join(t.TempDir(), "admin-token")})
	if err != nil {
		t.Fatalf("a member without a copy of the token: %v", err)
	}
	if !b.Verify("legacy-admin-token") || b.Verify("another") {
		t.Errorf("member b does not take the tier's admin token, or takes another")
	}
	// A member given another token.
	_, err = SetupAdminToken(ctx, AdminTokenConfig{Tier: tier, File: filepath.Join(t.TempDir(), "admin-token"), Token: "not-the-tiers"})
	if err == nil || !strings.Contains(err.Error(), "OUTPOST_ADMIN_TOKEN does not hold the token of this root tier") {
		t.Errorf("a member given another admin token: %v, want a refusal naming OUTPOST_ADMIN_TOKEN", err)
	}

	// An empty tier, three members at once: one token, in exactly one member's file.
	fresh := open("OUTPOST_TIER_FRESH")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	members := make([]*AdminToken, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, d := range dirs {
		wg.Go(func() {
			members[i], errs[i] = SetupAdminToken(ctx, AdminTokenConfig{Tier: fresh, File: filepath.Join(d, "admin-token"),
				Notice: &bytes.Buffer{}})
		})
	}
	wg.Wait()
	var tokens []string
	for i, d := range dirs {
		if errs[i] != nil {
			t.Fatalf("member %d: %v", i, errs[i])
		}
		if b, err := os.ReadFile(filepath.Join(d, "admin-token")); err == nil {
			tokens = append(tokens, strings.TrimSpace(string(b)))
		}
	}
	if len(tokens) != 1 {
		t.Fatalf("%d members wrote an admin token file: want exactly one", len(tokens))
	}
	for i, m := range members {
		if !m.Verify(tokens[0]) {
			t.Errorf("member %d does not accept the token member that made it wrote", i)
		}
	}
}

// TestWrongAdminTokensAreLimited: the management API checks the tier's admin token
// with bcrypt, so wrong tokens are limited per client address like failed logins
// elsewhere: a burst, then 429 before any check.
func TestWrongAdminTokensAreLimited(t *testing.T) {
	ctx := context.Background()
	f := startRoot(t)
	tier, err := events.OpenBucket(ctx, f.nc, events.BucketTier)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := SetupAdminToken(ctx, AdminTokenConfig{Tier: tier, File: filepath.Join(t.TempDir(), "admin-token"), Token: "the-admin-token"})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAPI(f.m, admin.Verify, time.Minute)
	// A clock that stands still: no try is given back while bcrypt compares run
	// (slow under -race), so the limit falls exactly after the burst.
	stopped := time.Now()
	a.failed = events.NewLoginLimiterWithClock(func() time.Time { return stopped })
	api := httptest.NewServer(a)
	t.Cleanup(api.Close)
	list := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, api.URL+"/outpost/v1/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, body := list("the-admin-token"); status != http.StatusOK {
		t.Fatalf("the admin token: %d %s", status, body)
	}
	var status, tries int
	var body string
	var start time.Time
	for tries = 1; tries <= 2*events.FailedLoginBurst; tries++ {
		start = time.Now()
		if status, body = list(fmt.Sprintf("wrong-%d", tries)); status != http.StatusUnauthorized {
			break
		}
	}
	if status != http.StatusTooManyRequests || !strings.Contains(body, "too many wrong admin tokens from 127.0.0.1") {
		t.Fatalf("wrong token %d: %d %s, want 429 naming the address", tries, status, body)
	}
	if tries != events.FailedLoginBurst+1 {
		t.Errorf("limited at wrong token %d: want a burst of %d first, then the limit", tries, events.FailedLoginBurst)
	}
	if took := time.Since(start); took > 20*time.Millisecond {
		t.Errorf("the refusal past the burst took %s: it must come before any bcrypt compare", took)
	}
	// Every management handler mounted behind AdminOnly (the webhooks) shares the
	// limit: an address past it is refused there too, the admin token included,
	// and a wrong token there counts as one here.
	reached := false
	other := httptest.NewServer(a.AdminOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached = true
		w.WriteHeader(http.StatusNoContent)
	})))
	t.Cleanup(other.Close)
	req, _ := http.NewRequest(http.MethodGet, other.URL+"/outpost/v1/webhooks", nil)
	req.Header.Set("Authorization", "Bearer the-admin-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || reached {
		t.Errorf("a handler behind AdminOnly, from the limited address: %d (reached %v), want 429", resp.StatusCode, reached)
	}
}
