// Package content makes the images, layers and artifacts tests push: one place for
// the test content of every package.
package content

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is a fresh random image with layers of 1 KiB (Docker media types).
func Image(t testing.TB, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(1024, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// OCIImage is a fresh image with OCI media types throughout (skopeo's oci: transport
// takes no others) and layers of 4 KiB.
func OCIImage(t testing.TB, layers int) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range layers {
		img = Append(t, img, Layer(t, 4096, types.OCILayer))
	}
	return img
}

// Layer is a fresh random layer; it is held in memory (for large ones, stream).
func Layer(t testing.TB, size int64, mt types.MediaType) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, mt)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Append adds layers to an image.
func Append(t testing.TB, img v1.Image, layers ...v1.Layer) v1.Image {
	t.Helper()
	out, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Artifact is an artifact manifest (as oras attach or cosign make) whose config
// media type is artifactType and whose subject is subject.
func Artifact(t testing.TB, artifactType string, subject *v1.Descriptor) v1.Image {
	t.Helper()
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.MediaType(artifactType)), types.OCIManifestSchema1)
	img = Append(t, img, Layer(t, 128, types.OCILayer))
	s := *subject
	s.Platform, s.Annotations = nil, nil
	return mutate.Subject(img, s).(v1.Image)
}

// Digest is the digest of an image, index or layer.
func Digest(t testing.TB, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// mediaTyped is an image or an index.
type mediaTyped interface {
	MediaType() (types.MediaType, error)
}

// MediaType is the media type of an image or index.
func MediaType(t testing.TB, x mediaTyped) string {
	t.Helper()
	mt, err := x.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return string(mt)
}
