package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/registry/s3test"
)

// tierMembers are a root tier's members: separate `outpost serve` processes, one
// JetStream cluster, one S3 bucket, each member named in every member's lists
// (so in the connection strings it gives children).
type tierMembers struct {
	servers  []*server
	opts     []outpostOptions // to restart member i as it was started
	dirs     []string
	gateways []string // member i's gateway, host:port
}

// startTierMembers starts n members with the admin token, member i in
// work/member<i>, content in a new bucket of s3. They start at once: each waits
// for the others' quorum before it serves. extra(i) adds flags to member i's.
func startTierMembers(ctx context.Context, c common, f clusterFlags, token, work string, s3 *s3test.Server, bucket string, n int, extra func(i int) []string) (_ *tierMembers, err error) {
	tm := &tierMembers{}
	defer func() {
		if err != nil {
			err = errors.Join(err, tm.stop())
		}
	}()
	if err := s3.CreateBucket(ctx, bucket); err != nil {
		return nil, err
	}
	secret := filepath.Join(work, "route.secret")
	if err := os.WriteFile(secret, []byte(newAdminToken()+"\n"), 0o600); err != nil {
		return nil, err
	}
	var hosts, routes []string
	for range n {
		for _, list := range []*[]string{&hosts, &tm.gateways, &routes} {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			*list = append(*list, a)
		}
	}
	for i := range n {
		args := []string{"--name", "root", "--log-level", f.logLevel,
			"--addr", hosts[i], "--gateway-addr", tm.gateways[i],
			"--cluster-name", "tier", "--cluster-listen", routes[i], "--cluster-routes", strings.Join(routes, ","),
			"--cluster-secret-file", secret,
			"--tier-registry", strings.Join(hosts, ","), "--tier-gateway", strings.Join(tm.gateways, ","),
			"--storage", "s3", "--s3-bucket", bucket, "--s3-endpoint", s3.Endpoint, "--s3-path-style"}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		o := rootOptions(token, args...)
		o.env = append(o.env, "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey)
		o.name = fmt.Sprintf("member%d", i)
		dir := filepath.Join(work, o.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if c.keep {
			o.log = filepath.Join(dir, "output.log")
		}
		tm.opts, tm.dirs = append(tm.opts, o), append(tm.dirs, dir)
	}
	tm.servers = make([]*server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { tm.servers[i], errs[i] = startOutpost(ctx, c.outpost, tm.dirs[i], tm.opts[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return tm, nil
}

// restart starts member i again on its data, as a supervisor would.
func (tm *tierMembers) restart(ctx context.Context, c common, i int) error {
	s, err := startOutpost(ctx, c.outpost, tm.dirs[i], tm.opts[i])
	if err != nil {
		return fmt.Errorf("restart %s: %w", tm.opts[i].name, err)
	}
	tm.servers[i] = s
	return nil
}

func (tm *tierMembers) stop() error {
	var errs []error
	for _, m := range tm.servers {
		if m != nil {
			errs = append(errs, m.stop())
		}
	}
	return errors.Join(errs...)
}
