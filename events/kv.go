package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Named errors of a Bucket.
var (
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyChanged: Create found the key, or Update found a newer revision.
	ErrKeyChanged = errors.New("key exists or changed")
)

// Bucket names: the state a node keeps besides content and events.
const (
	BucketNodes  = "OUTPOST_NODES"  // node definitions: the whole tree at the root, a subtree elsewhere
	BucketStatus = "OUTPOST_STATUS" // the last status of each node in the subtree
	BucketLocal  = "OUTPOST_LOCAL"  // this node's own small records (activation instance, applied resync)
	BucketTokens = "OUTPOST_TOKENS" // client tokens: all at the root, those bound to the subtree elsewhere
	// BucketTier holds what every member of a root tier shares and no member may keep
	// for itself: the registry token key set (public keys), the upload secret, the
	// admin token's hash. A single process keeps it too, as a tier of one.
	BucketTier = "OUTPOST_TIER"
)

// Bucket is a durable key-value map in the node's JetStream.
type Bucket struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	nc     *nats.Conn
	stream jetstream.Stream // the bucket's stream, KV_<name>
	// fromLeader: in a cluster, Get and Keys ask the bucket's leader. A key-value
	// read is otherwise answered by any copy (a direct get, a consumer placed
	// anywhere), and a copy a moment behind misses a write acknowledged a moment
	// ago: a node created at one root member was "not found" by the read that
	// followed the write, at the same member.
	fromLeader bool
	retry      RetryPolicy // of a read from the leader, across an election
}

// OpenBucket creates or opens a bucket.
func OpenBucket(ctx context.Context, nc *nats.Conn, name string, opts ...OpenOption) (*Bucket, error) {
	p := placementOf(opts)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	var kv jetstream.KeyValue
	stream, err := placeStream(ctx, js, "create bucket "+name, "KV_"+name, p, func(ctx context.Context, replicas int) (jetstream.Stream, error) {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Storage: jetstream.FileStorage, History: 1, Replicas: replicas,
		})
		if err != nil {
			return nil, err
		}
		return js.Stream(ctx, "KV_"+name)
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	return &Bucket{kv: kv, js: js, nc: nc, stream: stream, fromLeader: p.caughtUp != nil, retry: p.Publish}, nil
}

// Get returns a key's value and revision.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	if b.fromLeader {
		return b.leaderGet(ctx, key)
	}
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%s: %w", key, ErrKeyNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Put sets a key whatever it held.
func (b *Bucket) Put(ctx context.Context, key string, value []byte) error {
	if _, err := b.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Create sets a key that must not exist.
func (b *Bucket) Create(ctx context.Context, key string, value []byte) error {
	_, err := b.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%s: %w", key, ErrKeyChanged)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	return nil
}

// Update sets a key only if it is still at revision.
func (b *Bucket) Update(ctx context.Context, key string, value []byte, revision uint64) error {
	_, err := b.kv.Update(ctx, key, value, revision)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("%s: %w", key, ErrKeyChanged)
	}
	if err != nil {
		return fmt.Errorf("update %s: %w", key, err)
	}
	return nil
}

// Delete removes a key; a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := b.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Keys lists the keys. In a cluster it may name a key deleted a moment ago:
// read each with Get.
func (b *Bucket) Keys(ctx context.Context) ([]string, error) {
	if b.fromLeader {
		return b.leaderKeys(ctx)
	}
	keys, err := b.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// Revision is the bucket's revision: the sequence of its last write, any key's.
// PutAt and DeleteAt compare against it, so that a decision taken on a read of
// several keys is written only if none of them changed meanwhile (two root members
// writing at once).
func (b *Bucket) Revision(ctx context.Context) (uint64, error) {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("bucket %s revision: %w", b.kv.Bucket(), err)
	}
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("bucket %s revision: unexpected status %T", b.kv.Bucket(), st)
	}
	return kvs.StreamInfo().State.LastSeq, nil
}

// PutAt sets a key only if the bucket is still at revision (Revision): otherwise
// ErrKeyChanged, and the caller reads again.
func (b *Bucket) PutAt(ctx context.Context, key string, value []byte, revision uint64) error {
	return b.publishAt(ctx, key, value, "", revision, 0)
}

// UpdateAt sets a key only if the bucket is still at revision and the key at
// keyRevision (the revision Get returned): the key's own condition also holds when
// the read of the key came from a replica a moment behind.
func (b *Bucket) UpdateAt(ctx context.Context, key string, value []byte, revision, keyRevision uint64) error {
	return b.publishAt(ctx, key, value, "", revision, keyRevision)
}

// DeleteAt removes a key only if the bucket is still at revision; otherwise
// ErrKeyChanged.
func (b *Bucket) DeleteAt(ctx context.Context, key string, revision uint64) error {
	return b.publishAt(ctx, key, nil, "DEL", revision, 0)
}

// publishAt writes to the bucket's stream as the KV client does (subject
// $KV.<bucket>.<key>, a KV-Operation header for a delete), with the stream's last
// sequence as the condition (and the key's, when keyRevision is not 0), which
// KeyValue's own calls do not offer.
func (b *Bucket) publishAt(ctx context.Context, key string, value []byte, op string, revision, keyRevision uint64) error {
	m := nats.NewMsg("$KV." + b.kv.Bucket() + "." + key)
	m.Data = value
	if op != "" {
		m.Header.Set("KV-Operation", op)
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequence(revision)}
	if keyRevision != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(keyRevision))
	}
	_, err := b.js.PublishMsg(ctx, m, opts...)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("%s: bucket %s changed since revision %d: %w", key, b.kv.Bucket(), revision, ErrKeyChanged)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// leaderGet reads a key's last value from the bucket's leader
// ($JS.API.STREAM.MSG.GET, which only the leader answers; KeyValue.Get asks any
// copy when the stream allows direct gets, as a bucket's does).
func (b *Bucket) leaderGet(ctx context.Context, key string) ([]byte, uint64, error) {
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{"$KV." + b.kv.Bucket() + "." + key})
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	err = b.retry.do(ctx, "get "+key, func(ctx context.Context) error {
		m, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+b.kv.Bucket(), req)
		if err != nil {
			return err
		}
		resp.Error, resp.Message = nil, nil
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return fmt.Errorf("answer of the bucket's leader: %w", err)
		}
		if resp.Error != nil && resp.Error.ErrorCode != jetstream.JSErrCodeMessageNotFound {
			return resp.Error
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if resp.Error != nil || resp.Message == nil {
		return nil, 0, fmt.Errorf("%s: %w", key, ErrKeyNotFound)
	}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, 0, fmt.Errorf("get %s: headers: %w", key, err)
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil, 0, fmt.Errorf("%s: %w", key, ErrKeyNotFound)
		}
	}
	return resp.Message.Data, resp.Message.Sequence, nil
}

// leaderKeys lists the bucket's subjects from its leader's stream info; a key
// deleted keeps its marker, so it is listed too.
func (b *Bucket) leaderKeys(ctx context.Context) ([]string, error) {
	prefix := "$KV." + b.kv.Bucket() + "."
	var info *jetstream.StreamInfo
	err := b.retry.do(ctx, "list keys", func(ctx context.Context) error {
		var err error
		info, err = b.stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subject, prefix))
	}
	slices.Sort(keys)
	return keys, nil
}
