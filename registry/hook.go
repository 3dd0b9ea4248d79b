package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/distribution/distribution/v3"
	repomw "github.com/distribution/distribution/v3/registry/middleware/repository"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/outpost-edge/outpost/events"
)

// Publisher appends an event to the node's log and returns once it is durable.
type Publisher interface {
	Publish(ctx context.Context, e *events.Event) error
}

var _ Publisher = (*events.Log)(nil)

// The distribution app finds middleware by name in a process-wide table; the live
// hook of each node travels in the middleware options.
const (
	middlewareName = "outpost-events"
	hookOption     = "hook"
)

var registerOnce sync.Once

func registerMiddleware() error {
	var err error
	registerOnce.Do(func() {
		err = repomw.Register(middlewareName, func(ctx context.Context, repo distribution.Repository, options map[string]any) (distribution.Repository, error) {
			h, ok := options[hookOption].(*hook)
			if !ok {
				return nil, errors.New("outpost-events middleware: no hook in options")
			}
			return &hookedRepository{Repository: repo, hook: h}, nil
		})
	})
	return err
}

// hook turns every stored manifest and tag change into an event, and keeps the
// referrers index in step. It acts after the storage operation succeeded, and the
// client hears of success only after the event is durable.
type hook struct {
	node      string
	publisher Publisher
	referrers *referrersIndex
	health    *health
}

func (h *hook) publish(ctx context.Context, e *events.Event) error {
	e.Origin = h.node
	if rep, ok := replicaFrom(ctx); ok {
		e.Origin, e.From = rep.origin, rep.from
	}
	if err := h.publisher.Publish(ctx, e); err != nil {
		markUnrecorded(ctx, err)
		h.health.fail("event-log", err)
		return fmt.Errorf("record %s of %s: %w", e.Action, e.Repository, err)
	}
	h.health.ok("event-log")
	return nil
}

// hookedRepository is created per request, so the manifest put and the tag of one
// push can share what the put learnt.
type hookedRepository struct {
	distribution.Repository
	hook *hook

	mu      sync.Mutex
	pending map[digest.Digest]manifestInfo // put with a tag, waiting for Tag
}

func (r *hookedRepository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &hookedManifests{ManifestService: ms, repo: r}, nil
}

func (r *hookedRepository) Tags(ctx context.Context) distribution.TagService {
	return &hookedTags{TagService: r.Repository.Tags(ctx), repo: r}
}

func (r *hookedRepository) name() string { return r.Repository.Named().Name() }

// manifestInfo is what an event and the referrers index need from a manifest.
type manifestInfo struct {
	desc    v1.Descriptor // digest, media type, size, artifact type, annotations
	subject digest.Digest
}

func describe(dgst digest.Digest, m distribution.Manifest) (manifestInfo, error) {
	mediaType, payload, err := m.Payload()
	if err != nil {
		return manifestInfo{}, err
	}
	var fields struct {
		MediaType    string            `json:"mediaType"`
		ArtifactType string            `json:"artifactType"`
		Config       *v1.Descriptor    `json:"config"`
		Subject      *v1.Descriptor    `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(payload, &fields); err != nil {
		return manifestInfo{}, fmt.Errorf("read manifest %s: %w", dgst, err)
	}
	if mediaType == "" {
		mediaType = fields.MediaType
	}
	info := manifestInfo{desc: v1.Descriptor{
		MediaType: mediaType, Digest: dgst, Size: int64(len(payload)),
		ArtifactType: fields.ArtifactType, Annotations: fields.Annotations,
	}}
	// The referrers API reports an image's config media type when it has no artifactType.
	if info.desc.ArtifactType == "" && fields.Config != nil {
		info.desc.ArtifactType = fields.Config.MediaType
	}
	if fields.Subject != nil {
		info.subject = fields.Subject.Digest
	}
	return info, nil
}

type hookedManifests struct {
	distribution.ManifestService
	repo *hookedRepository
}

func (m *hookedManifests) Put(ctx context.Context, manifest distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	dgst, err := m.ManifestService.Put(ctx, manifest, options...)
	if err != nil {
		return dgst, err
	}
	info, err := describe(dgst, manifest)
	if err != nil {
		return dgst, err
	}
	if info.subject != "" {
		if err := m.repo.hook.referrers.add(ctx, m.repo.name(), info.subject, info.desc); err != nil {
			return dgst, err
		}
	}
	for _, o := range options {
		if _, ok := o.(distribution.WithTagOption); ok {
			// A push by tag: the event is published when the tag is set, so that it
			// names the tag and only follows a stored tag.
			m.repo.mu.Lock()
			if m.repo.pending == nil {
				m.repo.pending = map[digest.Digest]manifestInfo{}
			}
			m.repo.pending[dgst] = info
			m.repo.mu.Unlock()
			return dgst, nil
		}
	}
	return dgst, m.repo.hook.publish(ctx, pushEvent(m.repo.name(), "", info))
}

func (m *hookedManifests) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := m.ManifestService.Delete(ctx, dgst); err != nil {
		return err
	}
	if err := m.repo.hook.referrers.remove(ctx, m.repo.name(), dgst); err != nil {
		return err
	}
	return m.repo.hook.publish(ctx, &events.Event{
		Action: events.ActionManifestDelete, Repository: m.repo.name(), Digest: dgst.String(),
	})
}

type hookedTags struct {
	distribution.TagService
	repo *hookedRepository
}

func (t *hookedTags) Tag(ctx context.Context, tag string, desc v1.Descriptor) error {
	if err := t.TagService.Tag(ctx, tag, desc); err != nil {
		return err
	}
	t.repo.mu.Lock()
	info, ok := t.repo.pending[desc.Digest]
	delete(t.repo.pending, desc.Digest)
	t.repo.mu.Unlock()
	if !ok {
		info = manifestInfo{desc: desc}
	}
	return t.repo.hook.publish(ctx, pushEvent(t.repo.name(), tag, info))
}

func (t *hookedTags) Untag(ctx context.Context, tag string) error {
	// Untag does not say what the tag pointed at; the event should.
	old, _ := t.TagService.Get(ctx, tag)
	if err := t.TagService.Untag(ctx, tag); err != nil {
		return err
	}
	return t.repo.hook.publish(ctx, &events.Event{
		Action: events.ActionTagDelete, Repository: t.repo.name(), Tag: tag, Digest: old.Digest.String(),
	})
}

func pushEvent(repo, tag string, info manifestInfo) *events.Event {
	return &events.Event{
		Action: events.ActionPush, Repository: repo, Tag: tag,
		Digest: info.desc.Digest.String(), MediaType: info.desc.MediaType, Size: info.desc.Size,
		Subject: info.subject.String(),
	}
}
