package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/notify"
	"github.com/outpost-edge/outpost/test/content"
)

// hookReceiver is a webhook receiver: a real HTTP server on 127.0.0.1 that
// verifies every signature and records what it got, per webhook. It can go away
// (its listener closed: connections are refused) and come back on the same port.
type hookReceiver struct {
	t       *testing.T
	addr    string
	secrets map[string]string // webhook -> secret

	mu   sync.Mutex
	ln   net.Listener
	srv  *http.Server
	got  []received
	bad  []string
	down bool
	// dropNext is how many of the next requests are recorded and then answered by
	// closing the connection: taken, but the sender cannot know (a lost ack).
	dropNext int
}

type received struct {
	webhook string
	ce      notify.CloudEvent
}

func startHookReceiver(t *testing.T, secrets map[string]string) *hookReceiver {
	r := &hookReceiver{t: t, secrets: secrets}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *hookReceiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.ln, r.srv, r.down = ln, srv, false
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the listener and every connection: the receiver is gone.
func (r *hookReceiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.down = true
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart listens again on the same address.
func (r *hookReceiver) restart() {
	var ln net.Listener
	var err error
	for range 50 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("receiver back on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	hook := req.Header.Get(notify.HeaderWebhook)
	r.mu.Lock()
	defer r.mu.Unlock()
	secret, ok := r.secrets[hook]
	if !ok {
		r.bad = append(r.bad, "request for unknown webhook "+hook)
		http.Error(w, "unknown webhook", http.StatusBadRequest)
		return
	}
	if err := notify.Verify(secret, req.Header.Get(notify.HeaderTimestamp), req.Header.Get(notify.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%s: %v", hook, err))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ce notify.CloudEvent
	if err := json.Unmarshal(body, &ce); err != nil || ce.SpecVersion != "1.0" || ce.ID == "" {
		r.bad = append(r.bad, fmt.Sprintf("%s: not a CloudEvent: %s", hook, body))
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if req.Header.Get("Content-Type") != notify.ContentType {
		r.bad = append(r.bad, "content type "+req.Header.Get("Content-Type"))
	}
	r.got = append(r.got, received{webhook: hook, ce: ce})
	if r.dropNext > 0 {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			r.dropNext--
			_ = conn.Close()
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// nodeEvents reads n's whole event log.
func nodeEvents(t *testing.T, n *Node) []events.Event {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+"/outpost/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.operatorToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []events.Event
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.ID == "" {
			t.Fatalf("event log of %s: %s", n.opts.Name, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// nodeStatus reads GET /outpost/v1/status at n.
func nodeStatus(t *testing.T, n *Node) (st struct {
	Webhooks []notify.Status
}) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+"/outpost/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.operatorToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func webhookStatus(t *testing.T, n *Node, name string) (notify.Status, bool) {
	for _, s := range nodeStatus(t, n).Webhooks {
		if s.Name == name {
			return s, true
		}
	}
	return notify.Status{}, false
}

// TestWebhooksGetEveryMatchingChangeAcrossOutageAndRestarts is the must-show of
// issue 12, section 3: a tree-wide webhook and one for a single site, a receiver
// that goes away for 30 s, a site killed and started again, the root restarted.
// Every push and delete that happened at a node in a webhook's scope and matches
// its patterns reaches it (the node's event log is the oracle), nothing else does,
// a repeat carries the same id, every signature verifies.
func TestWebhooksGetEveryMatchingChangeAcrossOutageAndRestarts(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	ship := StartChild(t, root, Child{Name: "ship42", Mode: "ReadWrite", Repositories: []string{"hooks/*"}})

	secrets := map[string]string{"treehook": "tree-secret-0123456789abcdef", "shiphook": "ship-secret-0123456789abcdef"}
	rcv := startHookReceiver(t, secrets)
	dir := t.TempDir()
	for name, s := range secrets {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Tree-wide: pushes and deletes of hooks/app at every node. For ship42 only:
	// pushes of v* tags of any hooks/ repository (its deletes are not wanted).
	root.MustCLI(t, "webhook", "create", "treehook", "--url", "http://"+rcv.addr+"/tree",
		"--pattern", "hooks/app:*", "--secret-file", filepath.Join(dir, "treehook"))
	root.MustCLI(t, "webhook", "create", "shiphook", "--node", "ship42", "--url", "http://"+rcv.addr+"/ship",
		"--pattern", "hooks/*:v*:push", "--secret-file", filepath.Join(dir, "shiphook"))
	list := root.MustCLI(t, "webhook", "list", "--output", "json")
	for _, s := range secrets {
		if strings.Contains(list, s) {
			t.Fatalf("webhook list shows a secret:\n%s", list)
		}
	}
	Eventually(t, 30*time.Second, func() error {
		for _, h := range []string{"treehook", "shiphook"} {
			if _, ok := webhookStatus(t, ship, h); !ok {
				return fmt.Errorf("ship42's status does not list webhook %s yet", h)
			}
		}
		if _, ok := webhookStatus(t, root, "shiphook"); ok {
			return errors.New("the root delivers shiphook, which is ship42's only")
		}
		return nil
	})

	del := func(n *Node, ref string) {
		t.Helper()
		if err := remote.Delete(mustRef(t, n, ref), Auth); err != nil {
			t.Fatalf("delete %s at %s: %v", ref, n.opts.Name, err)
		}
	}
	// Phase 1, all up: pushes at the root (matching and not) reach ship42 too; a
	// local push at ship42 goes up to the root.
	d1 := push(t, root, "hooks/app:v1", content.Image(t, 1))
	push(t, root, "hooks/other:latest", content.Image(t, 1))   // matches neither
	d9 := push(t, root, "hooks/other:v9", content.Image(t, 1)) // shiphook at ship42 only
	dl := push(t, ship, "hooks/app:local1", content.Image(t, 1))
	eventuallyAt(t, "hooks/app:v1", d1, ship)
	eventuallyAt(t, "hooks/app:local1", dl, root)
	eventuallyAt(t, "hooks/other:v9", d9, ship)

	// Phase 2: the receiver goes away for 30 s. Meanwhile: a push, a tag delete at
	// the root, a delete at ship42; ship42 is killed (no clean stop) and started
	// again with its backlog waiting.
	rcv.stop()
	outage := time.Now()
	d2 := push(t, root, "hooks/app:v2", content.Image(t, 1))
	del(root, "hooks/app:v1")
	eventuallyAt(t, "hooks/app:v2", d2, ship)
	eventuallyAt(t, "hooks/app:v1", "", ship)
	del(ship, "hooks/app:local1")
	eventuallyAt(t, "hooks/app:local1", "", root)
	Eventually(t, 30*time.Second, func() error {
		st, _ := webhookStatus(t, root, "treehook")
		if st.PendingMessages == 0 || st.LastError == "" || !st.Failing {
			return fmt.Errorf("root's status of treehook shows no backlog or no error while the receiver is down: %+v", st)
		}
		if v := metric(t, root, `outpost_webhook_pending_messages{webhook="treehook"}`); v < 1 {
			return fmt.Errorf("outpost_webhook_pending_messages{webhook=treehook} = %v at the root", v)
		}
		return nil
	})
	if out := ship.MustCLI(t, "status"); !regexp.MustCompile(`shiphook: [1-9]\d* pending, .*failing since .*connection refused`).MatchString(out) {
		t.Errorf("outpost status at ship42 does not show shiphook's backlog and error:\n%s", out)
	}
	ship.Kill()
	ship.Start()
	d3 := push(t, root, "hooks/app:v3", content.Image(t, 1))
	eventuallyAt(t, "hooks/app:v3", d3, ship)
	if st, _ := webhookStatus(t, ship, "shiphook"); st.PendingMessages == 0 {
		t.Errorf("ship42's backlog for shiphook after its restart: %+v, want the waiting pushes", st)
	}
	time.Sleep(time.Until(outage.Add(30 * time.Second))) // the outage is the scenario: 30 s
	t.Logf("receiver down for %s", time.Since(outage).Round(time.Second))
	rcv.mu.Lock()
	rcv.dropNext = 3 // the first three it takes back, their answers lost
	rcv.mu.Unlock()
	rcv.restart()

	// Phase 3: the root restarts (a clean stop), then more changes.
	root.Stop()
	root.Start()
	d4 := push(t, root, "hooks/app:v4", content.Image(t, 1))
	eventuallyAt(t, "hooks/app:v4", d4, ship)
	del(root, "hooks/app:v2")
	eventuallyAt(t, "hooks/app:v2", "", ship)

	// The oracle: what each node's log says happened there.
	type want struct{ webhook, source, id string }
	expect := map[want]events.Event{}
	var nonMatching int
	hooks := map[string]*notify.Webhook{
		"treehook": {Patterns: []string{"hooks/app:*"}},
		"shiphook": {Patterns: []string{"hooks/*:v*:push"}, Node: "ship42"},
	}
	for _, n := range []*Node{root, ship} {
		for _, e := range nodeEvents(t, n) {
			for name, h := range hooks {
				if h.InScope(n.opts.Name) && h.Matches(&e) {
					expect[want{name, "/outpost/" + n.opts.Name, e.ID}] = e
				} else {
					nonMatching++
				}
			}
		}
	}
	Eventually(t, 60*time.Second, func() error {
		got := map[want]bool{}
		for _, r := range rcv.received() {
			got[want{r.webhook, r.ce.Source, r.ce.ID}] = true
		}
		var missing []string
		for w, e := range expect {
			if !got[w] {
				missing = append(missing, fmt.Sprintf("%s %s %s", w.webhook, w.source, e.String()))
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("%d of %d notifications not received yet:\n%s", len(missing), len(expect), strings.Join(missing, "\n"))
		}
		return nil
	})

	// Nothing else came, and a repeat is the same notification (same id, same
	// content).
	seen := map[want]notify.CloudEvent{}
	dups := 0
	for _, r := range rcv.received() {
		w := want{r.webhook, r.ce.Source, r.ce.ID}
		e, ok := expect[w]
		if !ok {
			t.Errorf("%s got a notification it should not: %+v", r.webhook, r.ce)
			continue
		}
		if r.ce.Data.Repository != e.Repository || r.ce.Data.Tag != e.Tag || r.ce.Data.Digest != e.Digest || r.ce.Data.Action != string(e.Action) {
			t.Errorf("notification %s does not describe event %s: %+v", r.ce.ID, e.String(), r.ce.Data)
		}
		if prev, ok := seen[w]; ok {
			dups++
			if prev.Data != r.ce.Data || prev.Type != r.ce.Type {
				t.Errorf("repeat of %s differs: %+v then %+v", r.ce.ID, prev, r.ce)
			}
		}
		seen[w] = r.ce
	}
	rcv.mu.Lock()
	if len(rcv.bad) > 0 {
		t.Errorf("receiver refused %d requests: %v", len(rcv.bad), rcv.bad)
	}
	if rcv.dropNext != 0 || dups < 3 {
		t.Errorf("%d answers still to drop, %d repeats: the three notifications whose answer was lost must come again", rcv.dropNext, dups)
	}
	rcv.mu.Unlock()

	// The valuable case is there: the image that arrived at ship42 by replication.
	arrived := false
	for w, e := range expect {
		if w.source == "/outpost/ship42" && w.webhook == "shiphook" && e.Tag == "v1" && e.From == "root" {
			arrived = true
		}
	}
	if !arrived {
		t.Errorf("no notification that hooks/app:v1 arrived at ship42 by replication")
	}
	counts := map[string]int{}
	for w, e := range expect {
		counts[w.webhook+" "+w.source+" "+string(notify.ActionOf(e.Action))]++
	}
	t.Logf("expected notifications %d (%v), received %d requests, %d repeats, %d event/webhook pairs not matching",
		len(expect), counts, len(rcv.received()), dups, nonMatching)
	for _, n := range []*Node{root, ship} {
		for _, h := range nodeStatus(t, n).Webhooks {
			t.Logf("%s: %+v", n.opts.Name, h)
		}
	}
	if v := metric(t, root, `outpost_webhook_deliveries_total{result="success",webhook="treehook"}`); v < 1 {
		t.Errorf("outpost_webhook_deliveries_total{treehook,success} at the root = %v", v)
	}
}

// TestWebhookCLI: `outpost webhook` at a real root: bad definitions are refused
// with the reason, a secret is never taken from the command line nor shown, and
// create/list/show/update/delete work.
func TestWebhookCLI(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	short := filepath.Join(dir, "short")
	const secret = "cli-secret-0123456789abcdef"
	if err := os.WriteFile(good, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"webhook", "create", "clihook", "--url", "http://127.0.0.1:9/hook", "--pattern", "hello-world:*:push"}
	with := func(args ...string) []string {
		out := slices.Clone(base)
		for i := 0; i+1 < len(args); i += 2 {
			if j := slices.Index(out, args[i]); j >= 0 {
				out[j+1] = args[i+1]
				continue
			}
			out = append(out, args[i], args[i+1])
		}
		if len(args)%2 == 1 {
			out = append(out, args[len(args)-1])
		}
		return out
	}
	refusals := []struct {
		args []string
		want string
	}{
		{with("--pattern", "hello-world:*:pull", "--secret-file", good), `action "pull" is not push, delete or *`},
		{with("--pattern", "Hello:*", "--secret-file", good), `repository "Hello" is not a repository name`},
		{with("--url", "ftp://127.0.0.1/hook", "--secret-file", good), "scheme must be http or https"},
		{with("--url", "https://user:pw@example.com/", "--secret-file", good), "must not carry a user or password"},
		{with("--ttl", "P91D", "--secret-file", good), "ttl P91D: must be from P1D to P90D"},
		{with("--node", "ship99", "--secret-file", good), "node ship99 does not exist"},
		{with("--secret", secret), "--secret: a secret on the command line shows in every process listing"},
		{with("--secret-file", short), "secret: 8 characters, at least 16 needed"},
		{base, "no secret: a webhook signs its notifications with one"},
		{[]string{"webhook", "create", "clihook", "--url", "http://127.0.0.1:9/", "--secret-file", good}, "patterns: at least one"},
		{[]string{"webhook", "create", "ab", "--url", "http://127.0.0.1:9/", "--pattern", "*:*", "--secret-file", good}, `name "ab": 5 to 50 letters and digits`},
		{[]string{"webhook", "show", "nohook"}, "not found: webhook nohook"},
		{[]string{"webhook", "delete", "nohook"}, "not found: webhook nohook"},
	}
	for _, r := range refusals {
		out, err := root.CLI(t, r.args...)
		if err == nil || !strings.Contains(out, r.want) {
			t.Errorf("outpost %s: %v, want a refusal saying %q; got:\n%s", strings.Join(r.args, " "), err, r.want, out)
		}
		if strings.Contains(out, secret) {
			t.Errorf("outpost %s shows the secret:\n%s", strings.Join(r.args, " "), out)
		}
	}
	if out, err := root.CLI(t, "webhook", "list", "--token", "wrong-token"); err == nil || !strings.Contains(out, "admin token") {
		t.Errorf("webhook list with a wrong token: %v\n%s", err, out)
	}

	out := root.MustCLI(t, with("--secret-file", good, "--ttl", "P7D")...)
	var created notify.Webhook
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "clihook" || created.TTL != "P7D" || !created.Enabled {
		t.Fatalf("create: %v\n%s", err, out)
	}
	t.Setenv("OUTPOST_WEBHOOK_SECRET", "env-secret-0123456789abcdef")
	root.MustCLI(t, "webhook", "create", "envhook", "--url", "http://127.0.0.1:9/", "--pattern", "*:*")
	out, err := root.CLI(t, "webhook", "create", "clihook", "--url", "http://127.0.0.1:9/", "--pattern", "*:*")
	if err == nil || !strings.Contains(out, "webhook clihook already exists") {
		t.Errorf("second create of clihook: %v\n%s", err, out)
	}
	root.MustCLI(t, "webhook", "update", "clihook", "--enabled=false", "--pattern", "a/*:*", "--pattern", "b:v1:delete")
	show := root.MustCLI(t, "webhook", "show", "clihook")
	var shown notify.Webhook
	if err := json.Unmarshal([]byte(show), &shown); err != nil || shown.Enabled || !slices.Equal(shown.Patterns, []string{"a/*:*", "b:v1:delete"}) {
		t.Errorf("show after update: %v\n%s", err, show)
	}
	table := root.MustCLI(t, "webhook", "list")
	for _, want := range []string{"NAME", "clihook", "envhook", "(all)", "a/*:* b:v1:delete"} {
		if !strings.Contains(table, want) {
			t.Errorf("webhook list lacks %q:\n%s", want, table)
		}
	}
	for _, s := range []string{secret, "env-secret-0123456789abcdef"} {
		if strings.Contains(show+table+out+root.MustCLI(t, "webhook", "list", "-o", "json"), s) {
			t.Errorf("a secret is shown")
		}
	}
	if strings.Contains(root.Output(), secret) {
		t.Errorf("the root logged a webhook secret")
	}
	root.MustCLI(t, "webhook", "delete", "clihook")
	if out, err := root.CLI(t, "webhook", "show", "clihook"); err == nil {
		t.Errorf("show after delete: %s", out)
	}
}
