package events

import (
	"context"
	"errors"
	"testing"
)

// TestBucketRevisionConditions: PutAt, UpdateAt and DeleteAt write only if the
// whole bucket (and for UpdateAt the key too) is still where the caller read it;
// a write of any key in between makes them fail with ErrKeyChanged.
func TestBucketRevisionConditions(t *testing.T) {
	ctx := context.Background()
	s, err := StartServer(ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "kvtest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect("kvtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := OpenBucket(ctx, nc, "KV_TEST")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := b.Revision(ctx)
	if err != nil || rev != 0 {
		t.Fatalf("an empty bucket's revision: %d, %v", rev, err)
	}
	if err := b.PutAt(ctx, "a", []byte("1"), rev); err != nil {
		t.Fatalf("put at the current revision: %v", err)
	}
	if err := b.PutAt(ctx, "b", []byte("1"), rev); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("put of another key at a revision the bucket has left: %v, want ErrKeyChanged", err)
	}
	rev, _ = b.Revision(ctx)
	_, keyRev, err := b.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateAt(ctx, "a", []byte("2"), rev, keyRev+7); !errors.Is(err, ErrKeyChanged) {
		t.Errorf("update naming a key revision it does not have: %v, want ErrKeyChanged", err)
	}
	if err := b.UpdateAt(ctx, "a", []byte("2"), rev, keyRev); err != nil {
		t.Errorf("update at the bucket's and the key's revision: %v", err)
	}
	if err := b.DeleteAt(ctx, "a", rev); !errors.Is(err, ErrKeyChanged) {
		t.Errorf("delete at a revision the bucket has left: %v, want ErrKeyChanged", err)
	}
	rev, _ = b.Revision(ctx)
	if err := b.DeleteAt(ctx, "a", rev); err != nil {
		t.Errorf("delete at the current revision: %v", err)
	}
	if _, _, err := b.Get(ctx, "a"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("a key deleted at a revision: %v, want ErrKeyNotFound", err)
	}
	if keys, _ := b.Keys(ctx); len(keys) != 0 {
		t.Errorf("keys after the delete: %v", keys)
	}
}
