package test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/outpost-edge/outpost/test/content"
)

// linkBytes reads a connected node's outpost_link_bytes_total for a direction.
func linkBytes(t *testing.T, n *Node, direction string) float64 {
	t.Helper()
	re := regexp.MustCompile(`outpost_link_bytes_total\{direction="` + direction + `"\} ([0-9.e+]+)`)
	m := re.FindStringSubmatch(scrape(t, n))
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestBandwidthLimitHoldsTheLinkToIt: a site with a limit set at the root moves its
// content no faster than the limit, and counts what it moved.
func TestBandwidthLimitHoldsTheLinkToIt(t *testing.T) {
	const limit = 1 << 20 // 1 MiB/s
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "sitesat", Mode: "ReadOnly", Repositories: []string{"sat/*"},
		CreateArgs: []string{"--bandwidth-limit", strconv.Itoa(limit)}})
	img := content.Image(t, 0)
	layerBytes := 0
	for range 3 { // 3 MiB of random layers
		l := content.Layer(t, 1<<20, types.DockerLayer)
		img = content.Append(t, img, l)
		layerBytes += 1 << 20
	}
	start := time.Now()
	d := push(t, root, "sat/big:1", img)
	eventuallyAt(t, "sat/big:1", d, site)
	took := time.Since(start)
	// 3 MiB at 1 MiB/s, less the first burst, cannot take under about 2.9 s.
	if took < 2800*time.Millisecond {
		t.Errorf("3 MiB crossed a 1 MiB/s link in %s", took)
	}
	if moved := linkBytes(t, site, "downstream"); moved < float64(layerBytes) {
		t.Errorf("the site counts %.0f bytes moved downstream, want at least %d", moved, layerBytes)
	}
	t.Logf("3 MiB under a 1 MiB/s limit: %s", took.Round(10*time.Millisecond))

}

// TestALayerTheSiteHoldsElsewhereIsMountedNotSent: a base layer shared by two
// repositories crosses the link once.
func TestALayerTheSiteHoldsElsewhereIsMountedNotSent(t *testing.T) {
	const size = 2 << 20
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "sitebase", Mode: "ReadOnly", Repositories: []string{"m/*"}})
	base := content.Layer(t, size, types.DockerLayer)
	one := content.Append(t, content.Image(t, 1), base)
	two := content.Append(t, content.Image(t, 1), base)
	d1 := push(t, root, "m/one:1", one)
	eventuallyAt(t, "m/one:1", d1, site)
	before := linkBytes(t, site, "downstream")
	d2 := push(t, root, "m/two:1", two)
	eventuallyAt(t, "m/two:1", d2, site)
	moved := linkBytes(t, site, "downstream") - before
	t.Logf("second image sharing a %d MiB layer: %.0f KiB moved", size>>20, moved/1024)
	if moved > size/4 {
		t.Errorf("moved %.0f bytes for an image whose %d-byte layer the site already held", moved, size)
	}
	verifyImages(t, site, "m/two", map[string]string{"1": d2})
}
