package test

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDeployRelease: `make release` cross-builds static linux/amd64, arm64 and
// arm/v7 binaries with the version embedded, and SHA256SUMS matches them.
func TestDeployRelease(t *testing.T) {
	dist := t.TempDir()
	version := "v0.0.0-releasetest"
	start := time.Now()
	if out, err := Run(t, 20*time.Minute, "make", "-C", repoRoot(), "release", "DIST="+dist, "VERSION="+version); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release: %s", time.Since(start).Round(100*time.Millisecond))

	want := map[string]elf.Machine{
		"outpost-linux-amd64": elf.EM_X86_64,
		"outpost-linux-arm64": elf.EM_AARCH64,
		"outpost-linux-armv7": elf.EM_ARM,
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want `<sum>  <file>` (sha256sum -c reads it)", line)
		}
		listed[name] = sum
	}
	for name, machine := range want {
		path := filepath.Join(dist, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		if listed[name] != hex.EncodeToString(got[:]) {
			t.Errorf("%s: SHA256SUMS says %q, the file's is %x", name, listed[name], got)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: not an ELF file: %v", name, err)
		}
		if f.Machine != machine {
			t.Errorf("%s: ELF machine %s, want %s", name, f.Machine, machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: has %s: not a static binary", name, p.Type)
			}
		}
		f.Close()
		t.Logf("%s: %.1f MB, %s", name, float64(len(data))/1e6, machine)
	}
	if len(listed) != len(want) {
		t.Errorf("SHA256SUMS lists %d files, want %d:\n%s", len(listed), len(want), sums)
	}
	out := MustRun(t, time.Minute, filepath.Join(dist, "outpost-linux-amd64"), "--version")
	if !strings.HasPrefix(out, "outpost "+version+" (commit ") {
		t.Errorf("outpost --version: want the embedded version %s, got %q", version, out)
	}
}
