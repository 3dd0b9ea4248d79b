package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// server is a registry process listening on addr.
type server struct {
	*process
	addr   string
	creds  credentials              // what clients sign in with; none for plain distribution
	logged map[string]chan struct{} // closed once the message is logged; see await
}

// outpostOptions are what differs between the `outpost serve` processes a suite runs.
type outpostOptions struct {
	name  string      // process name in logs and errors; default "outpost"
	args  []string    // extra serve flags, e.g. --connection-string
	env   []string    // extra environment, e.g. OUTPOST_ADMIN_TOKEN
	creds credentials // what clients sign in with: the admin token at a root, a client token at a child
	log   string      // file for the process's output; "" for none
	await []string    // log messages to wait for with server.await, e.g. "reconciled"
}

// startOutpost runs `outpost serve` with its data in dir/data on free ports and
// returns once it logs "serving" (a connected node does so once activated) and its
// /v2/ answers to o.creds.
func startOutpost(ctx context.Context, bin, dir string, o outpostOptions) (*server, error) {
	if o.name == "" {
		o.name = "outpost"
	}
	addrc := make(chan string, 1)
	logged := make(map[string]chan struct{}, len(o.await))
	for _, msg := range o.await {
		logged[msg] = make(chan struct{})
	}
	args := append([]string{"serve", "--data", filepath.Join(dir, "data"),
		"--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--log-format", "json"}, o.args...)
	// Lines come one at a time, so a channel is closed at most once.
	p, err := startProcess(o.name, bin, args, o.env, o.log, func(line string) {
		var rec struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			return
		}
		if rec.Msg == "serving" {
			select {
			case addrc <- rec.HTTP:
			default:
			}
		}
		if c, ok := logged[rec.Msg]; ok {
			select {
			case <-c:
			default:
				close(c)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	select {
	case addr := <-addrc:
		srv := &server{process: p, addr: addr, creds: o.creds, logged: logged}
		return srv, srv.waitReady(ctx)
	case <-p.exited:
		err = errors.New("exited before serving")
	case <-timeout.C:
		err = fmt.Errorf("no %q log line within %s%s", "serving", startTimeout, p.lastOutput())
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(fmt.Errorf("start %s: %w%s", o.name, err, p.exitReport()), p.stop())
}

// await waits until the server has logged msg, which its outpostOptions.await
// named, at any time since it started.
func (s *server) await(ctx context.Context, msg string, timeout time.Duration) error {
	c, ok := s.logged[msg]
	if !ok {
		return fmt.Errorf("%s: %q is not awaited", s.name, msg)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c:
		return nil
	case <-s.exited:
		return fmt.Errorf("%s: exited before logging %q%s", s.name, msg, s.exitReport())
	case <-t.C:
		return fmt.Errorf("%s: no %q log line within %s%s", s.name, msg, timeout, s.lastOutput())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// distributionConfig leaves out the access log: Outpost's embedded app has none, and
// the comparison is about serving, not logging.
const distributionConfig = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`

func startDistribution(ctx context.Context, bin, dir, logPath string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(distributionConfig, filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("distribution config: %w", err)
	}
	p, err := startProcess("distribution", bin, []string{"serve", cfgPath}, nil, logPath, nil)
	if err != nil {
		return nil, err
	}
	srv := &server{process: p, addr: addr}
	return srv, srv.waitReady(ctx)
}

// freeAddr finds a free loopback port. distribution cannot report a port it chose
// itself, so there is a small window in which another process could take it.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls /v2/, with the server's credentials, until it answers 200. A
// server that refuses them fails at once: polling on would only use up the failed
// logins the node allows from 127.0.0.1, which every client here shares. On
// failure it stops the process.
func (s *server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	url := "http://" + s.addr + "/v2/"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return errors.Join(fmt.Errorf("%s: %w", s.name, err), s.stop())
		}
		s.creds.authorize(req)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return nil
			case http.StatusUnauthorized, http.StatusForbidden:
				return errors.Join(fmt.Errorf("start %s: GET %s as %q: %s: %s", s.name, url, s.creds.user, resp.Status,
					strings.TrimSpace(string(body))), s.stop())
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-tick.C:
		case <-s.exited:
			return errors.Join(fmt.Errorf("start %s: exited%s", s.name, s.exitReport()), s.stop())
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("start %s: not ready: %w (last: %v)", s.name, ctx.Err(), last), s.stop())
		}
	}
}

// process is a child process whose combined output is scanned line by line; the
// last lines are kept to explain a failure.
type process struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // set before exited is closed

	mu   sync.Mutex
	tail []string
}

const tailLines = 20

// startProcess starts bin with the environment plus env, minus any OUTPOST_*
// variables of the caller's (a stray OUTPOST_CONNECTION_STRING would make a root a
// child). If logPath is set, the output is also written there.
func startProcess(name, bin string, args, env []string, logPath string, onLine func(string)) (*process, error) {
	var logFile *os.File
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("start %s: log file: %w", name, err)
		}
		logFile = f
	}
	cmd := exec.Command(bin, args...)
	// The standalone registry exports OpenTelemetry traces to localhost:4318 on every
	// request unless told not to; the embedded app never does. Same work for both.
	cmd.Env = append(append(childEnv(), "OTEL_TRACES_EXPORTER=none"), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	slog.Info("started", "process", name, "pid", cmd.Process.Pid)
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		var r io.Reader = pr
		if logFile != nil {
			r = io.TeeReader(pr, logFile)
		}
		p.scan(r, onLine)
	}()
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
		<-scanned
		if logFile != nil {
			logFile.Close()
		}
		close(p.exited)
	}()
	return p, nil
}

func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTPOST_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *process) scan(r io.Reader, onLine func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > tailLines {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
		if onLine != nil {
			onLine(line)
		}
	}
	// Keep draining, or the child would block on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// lastOutput is what the process last wrote, to explain a failure.
func (p *process) lastOutput() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("\n%s's last output:\n%s", p.name, strings.Join(p.tail, "\n"))
}

// exitReport says how the process ended and what it last wrote, if it has exited.
func (p *process) exitReport() string {
	select {
	case <-p.exited:
	default:
		return ""
	}
	return fmt.Sprintf("\n%s exited (%v)%s", p.name, p.waitErr, p.lastOutput())
}

// stop interrupts the process and waits for it, killing it if it does not exit in
// time. It is safe to call more than once.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	timeout := time.NewTimer(stopTimeout)
	defer timeout.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timeout.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within %s of an interrupt; killed", p.name, stopTimeout)
	}
}

// runTool runs a peer tool, with the environment plus env (e.g. DOCKER_CONFIG), to
// completion and returns how long it took, from start to exit. Its output goes to
// logPath if set and is quoted on failure.
func runTool(ctx context.Context, name, bin string, args, env []string, logPath string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(childEnv(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if logPath != "" {
		if werr := os.WriteFile(logPath, []byte(out.String()), 0o600); werr != nil {
			slog.Warn("tool log", "path", logPath, "err", werr)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, lastLines(out.String(), tailLines))
	}
	return d, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
