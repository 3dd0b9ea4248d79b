package node

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDataDirLockNamesItsHolder: a second lock on a held data directory fails with
// the holder's pid and start time; once released, the directory can be locked again.
func TestDataDirLockNamesItsHolder(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	first, err := lockDataDir(dir, since)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir, time.Now())
	want := fmt.Sprintf("data directory %s is in use by outpost pid %d since 2026-11-27T15:00:00Z", dir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := lockDataDir(dir, time.Now())
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	_ = again.Close()
}
