package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Control requests go from a child to its parent over the gateway:
// outpost.ctl.<child>.<verb>. A child may only publish under its own name.
const controlPrefix = "outpost.ctl."

// Control verbs.
const (
	VerbActivate = "activate"
	VerbConfig   = "config"
	VerbStatus   = "status"
)

// ControlSubject is the subject a child sends verb requests on.
func ControlSubject(child, verb string) string { return controlPrefix + child + "." + verb }

// ControlSubscription matches every child's control requests.
const ControlSubscription = controlPrefix + "*.*"

// FenceSubject carries, between the members of a root tier, that a child's
// activation changed: every member closes the gateway connections of the child's
// processes that are not the active one. Only the node's own account publishes it.
func FenceSubject(child string) string { return fencePrefix + child }

// FenceSubscription matches every FenceSubject.
const FenceSubscription = fencePrefix + "*"

const fencePrefix = "outpost.fence."

// ControlQueue is the queue group every member of a node's tier subscribes to
// ControlSubscription in: one member answers each request, not every one.
const ControlQueue = "outpost-gateway"

// ParseControlSubject splits a control subject into the sending child and verb.
func ParseControlSubject(subject string) (child, verb string, err error) {
	var rest string
	if _, err := fmt.Sscanf(subject, controlPrefix+"%s", &rest); err != nil {
		return "", "", fmt.Errorf("control subject %q", subject)
	}
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i] == '.' {
			return rest[:i], rest[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("control subject %q", subject)
}

// inboxPrefix is where one process of a child reads its replies: each process
// instance its own, so a fenced process cannot read its successor's.
func inboxPrefix(child, instance string) string { return "_INBOX_" + child + "." + instance }

// HeaderInstance carries a child's process instance on its control requests and on
// its HTTP requests to the parent's registry: the parent refuses every instance but
// the one the child's definition names as active.
const HeaderInstance = "Outpost-Instance"

var instanceRegexp = regexp.MustCompile(`^[A-Za-z0-9]{8,64}$`)

// ValidInstance checks a process instance id: 8 to 64 letters and digits, so that
// it can sit in a subject and a header.
func ValidInstance(instance string) error {
	if !instanceRegexp.MatchString(instance) {
		return fmt.Errorf("process instance %q: want 8 to 64 letters and digits", instance)
	}
	return nil
}

// childConnPrefix starts the connection name a child dials its parent with; the
// process instance follows it, for the parent's login check.
const childConnPrefix = "outpost-child "

// ChildConnName is the connection name of one process instance of child.
func ChildConnName(child, instance string) string { return childConnPrefix + child + " " + instance }

// InstanceOfConn reads the process instance from a child's connection name; "" if
// the name is not one.
func InstanceOfConn(name string) string {
	rest, ok := strings.CutPrefix(name, childConnPrefix)
	if !ok {
		return ""
	}
	_, instance, _ := strings.Cut(rest, " ")
	return instance
}

// childAccountName is the NATS account a child's login lives in at its parent.
func childAccountName(child string) string { return "outpost-child-" + child }

// childService is one thing a child may ask of its parent: a subject the node's
// account exports to the child's account alone.
type childService struct {
	subject string
	// streamed: several answers to one request (a pull delivers a batch of
	// messages, then status messages, to the request's reply).
	streamed bool
}

// childServices is all a child may do at its parent's gateway: drain its own
// outbox, read its outbox's bounds (to see messages that expired before it came),
// and send control requests in its own name.
//
// A child's login lives in an account of its own that imports only these from the
// node's account. nats-server checks permissions on the subject a client publishes,
// never on its reply; across an import the reply a child chose stays in the child's
// account (the node's side sees a one-time _R_ subject), so no answer to a child,
// from JetStream or from the gateway, can land on the node's JetStream API, its
// buckets, its log or another child.
func childServices(child string) []childService {
	out := DownstreamOutbox(child)
	return []childService{
		{subject: "$JS.API.CONSUMER.INFO." + out + "." + drainConsumer},
		{subject: "$JS.API.STREAM.INFO." + out},
		{subject: "$JS.API.CONSUMER.MSG.NEXT." + out + "." + drainConsumer, streamed: true},
		{subject: "$JS.ACK." + out + "." + drainConsumer + ".>"},
		{subject: controlPrefix + child + ".*"},
	}
}

// childPermissions is what a child's login may publish and subscribe to inside its
// own account: the imported subjects, and its own process instance's inbox prefix
// for replies (so a fenced process cannot read its successor's). A process instance
// that is not the active one (one about to activate, or one fenced) may only send
// control requests: to activate, or to hear why it is refused.
func childPermissions(child, instance string, active bool) (pub, sub []string) {
	sub = []string{inboxPrefix(child, instance) + ".>"}
	if !active {
		return []string{controlPrefix + child + ".*"}, sub
	}
	for _, s := range childServices(child) {
		pub = append(pub, s.subject)
	}
	return pub, sub
}

// ErrForeignReply refuses a control request whose reply would not lead back to the
// child that sent it.
var ErrForeignReply = errors.New("control request: the reply does not lead back to the child that sent it")

// serviceReplyPrefix starts the one-time reply subject nats-server puts on a request
// that crossed an import; clients cannot publish with such a reply themselves.
const serviceReplyPrefix = "_R_."

// requestInfoHeader is set by nats-server on a request that crossed an import,
// naming the account it came from; a client's own value is replaced.
const requestInfoHeader = "Nats-Request-Info"

// CheckControlRequest returns who sent a control request and its verb, once it has
// checked that answering m can only reach that child: the request came through the
// child's own account and its reply is the one-time subject nats-server maps back
// there. Anything else (a reply a client chose, a request from another account)
// is ErrForeignReply and must not be answered.
func CheckControlRequest(m *nats.Msg) (child, verb string, err error) {
	child, verb, err = ParseControlSubject(m.Subject)
	if err != nil {
		return "", "", err
	}
	if !strings.HasPrefix(m.Reply, serviceReplyPrefix) || strings.ContainsAny(m.Reply, "*> ") {
		return "", "", fmt.Errorf("%w: %s sent reply %q", ErrForeignReply, child, m.Reply)
	}
	var info struct {
		Account string `json:"acc"`
	}
	if err := json.Unmarshal([]byte(m.Header.Get(requestInfoHeader)), &info); err != nil || info.Account != childAccountName(child) {
		return "", "", fmt.Errorf("%w: a request on %s's subject came from account %q", ErrForeignReply, child, info.Account)
	}
	return child, verb, nil
}

// DialParent connects to a parent's gateway as one process instance of child, with
// its sync token. gateway is host:port, or several separated by commas (the members
// of a root tier): the connection goes to one of them and, when that one goes, to
// another.
func DialParent(gateway, user, password, child, instance string, opts ...nats.Option) (*nats.Conn, error) {
	if err := ValidInstance(instance); err != nil {
		return nil, err
	}
	var urls []string
	for _, g := range strings.Split(gateway, ",") {
		if g = strings.TrimSpace(g); g != "" {
			urls = append(urls, "nats://"+g)
		}
	}
	if len(urls) == 0 {
		return nil, errors.New("connect to parent gateway: no endpoint")
	}
	all := append([]nats.Option{
		nats.UserInfo(user, password),
		nats.CustomInboxPrefix(inboxPrefix(child, instance)),
		nats.Name(ChildConnName(child, instance)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		// A child created a moment ago is known to its parent only after the
		// parent's next sync: keep trying rather than give up on the first refusal.
		nats.IgnoreAuthErrorAbort(),
		// Only the endpoints the connection string names: members advertise the
		// addresses they listen on, which a site may not reach (or its TLS not
		// name).
		nats.IgnoreDiscoveredServers(),
	}, opts...)
	nc, err := nats.Connect(strings.Join(urls, ","), all...)
	if err != nil {
		return nil, fmt.Errorf("connect to parent gateway %s: %w", gateway, err)
	}
	return nc, nil
}
