package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// image is a single-layer image with its tag and precomputed digest.
type image struct {
	tag    string
	img    v1.Image
	digest v1.Hash
}

// generator makes content that is new for every run, round and purpose, so that no
// registry ever already has a blob it is sent.
type generator struct {
	seed  uint64
	round int
}

func (g generator) prngSeed(purpose string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], g.seed)
	return sha256.Sum256(fmt.Appendf(b[:], "/%d/%s", g.round, purpose))
}

// large is one image with a single pseudo-random layer of size bytes.
func (g generator) large(purpose, tag string, size int64) (image, error) {
	layer, err := newPRNGLayer(g.prngSeed(purpose), size)
	if err != nil {
		return image{}, err
	}
	return newImage(tag, layer)
}

// small is n images of one random 1-4 KiB layer each, tagged img-0000, img-0001, ...
func (g generator) small(purpose string, n int) ([]image, error) {
	seed := g.prngSeed(purpose)
	content := rand.NewChaCha8(seed)
	sizes := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:16])))
	imgs := make([]image, 0, n)
	for i := range n {
		b := make([]byte, 1024+sizes.IntN(3*1024+1))
		_, _ = content.Read(b) // never fails
		img, err := newImage(fmt.Sprintf("img-%04d", i), static.NewLayer(b, types.OCIUncompressedLayer))
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// newImage builds a single-layer OCI image and computes its digest now, so that no
// client-side hashing is timed.
func newImage(tag string, layer v1.Layer) (image, error) {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return image{}, fmt.Errorf("image %s: %w", tag, err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	digest, err := img.Digest()
	if err != nil {
		return image{}, fmt.Errorf("image %s: %w", tag, err)
	}
	return image{tag: tag, img: img, digest: digest}, nil
}

// prngLayer is an uncompressed layer of pseudo-random bytes. Its content is
// regenerated on every read, so even a large layer never sits in memory; its digest
// is computed up front by one pass, because a manifest needs it before the push.
type prngLayer struct {
	seed   [32]byte
	size   int64
	digest v1.Hash
}

var _ v1.Layer = (*prngLayer)(nil)

func newPRNGLayer(seed [32]byte, size int64) (*prngLayer, error) {
	l := &prngLayer{seed: seed, size: size}
	rc, _ := l.Compressed()
	defer rc.Close()
	digest, n, err := v1.SHA256(rc)
	if err != nil {
		return nil, fmt.Errorf("hash generated layer: %w", err)
	}
	if n != size {
		return nil, fmt.Errorf("hash generated layer: got %d of %d bytes", n, size)
	}
	l.digest = digest
	return l, nil
}

func (l *prngLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(rand.NewChaCha8(l.seed), l.size)), nil
}

func (l *prngLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *prngLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *prngLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *prngLayer) Size() (int64, error)                 { return l.size, nil }
func (l *prngLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// size is what a registry stores of the image: manifest, config and layers.
func (im image) size() (int64, error) {
	raw, err := im.img.RawManifest()
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", im.tag, err)
	}
	m, err := im.img.Manifest()
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", im.tag, err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
