package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrDataDirInUse is matched (errors.Is) by the error of a process started on a
// data directory another process holds.
var ErrDataDirInUse = errors.New("data directory in use")

type dataDirInUse string

func (e dataDirInUse) Error() string      { return string(e) }
func (dataDirInUse) Is(target error) bool { return target == ErrDataDirInUse }

// lockDataDir takes DATA/lock for this process's lifetime: an exclusive flock, so
// that a second `outpost serve` on the same data directory stops before it opens
// the store, naming the process that holds it. The kernel releases the lock when
// the holder exits, SIGKILL included: a stale file never blocks a restart.
func lockDataDir(data string, now time.Time) (*os.File, error) {
	file := filepath.Join(data, "lock")
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: lock: %w", data, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(file); rerr == nil && strings.TrimSpace(string(b)) != "" {
			holder = strings.TrimSpace(string(b))
		}
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, dataDirInUse(fmt.Sprintf("data directory %s is in use by %s: stop it first, or give this process another --data", data, holder))
		}
		return nil, fmt.Errorf("data directory %s: lock %s: %w", data, file, err)
	}
	// Who holds it, for the next one's message; the lock is the flock, not this text.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("outpost pid %d since %s\n", os.Getpid(), now.UTC().Format(time.RFC3339))), 0)
	}
	return f, nil
}
