package events

import (
	"encoding/json"
	"errors"
	"fmt"
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

func inboxPrefix(child string) string { return "_INBOX_" + child }

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
// own account: the imported subjects, and its own inbox prefix for replies.
func childPermissions(child string) (pub, sub []string) {
	for _, s := range childServices(child) {
		pub = append(pub, s.subject)
	}
	return pub, []string{inboxPrefix(child) + ".>"}
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

// DialParent connects to a parent's gateway as child, with its sync token.
func DialParent(gateway, user, password, child string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.UserInfo(user, password),
		nats.CustomInboxPrefix(inboxPrefix(child)),
		nats.Name("outpost-child-" + child),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		// A child created a moment ago is known to its parent only after the
		// parent's next sync: keep trying rather than give up on the first refusal.
		nats.IgnoreAuthErrorAbort(),
	}, opts...)
	nc, err := nats.Connect("nats://"+gateway, all...)
	if err != nil {
		return nil, fmt.Errorf("connect to parent gateway %s: %w", gateway, err)
	}
	return nc, nil
}
