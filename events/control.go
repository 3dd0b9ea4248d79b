package events

import (
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

// childPermissions is all a child may do at its parent's gateway: drain its own
// outbox, and send control requests in its own name. Replies come on its own inbox
// prefix; the shared _INBOX.> would expose other clients' replies. A process
// instance that is not the active one (one about to activate, or one fenced) may
// only send control requests: to activate, or to hear why it is refused.
func childPermissions(child, instance string, active bool) (pub, sub []string) {
	out := DownstreamOutbox(child)
	sub = []string{inboxPrefix(child, instance) + ".>"}
	if !active {
		return []string{controlPrefix + child + ".*"}, sub
	}
	return []string{
		"$JS.API.CONSUMER.INFO." + out + "." + drainConsumer,
		"$JS.API.STREAM.INFO." + out, // to see messages that expired before it came
		"$JS.API.CONSUMER.MSG.NEXT." + out + "." + drainConsumer,
		"$JS.ACK." + out + "." + drainConsumer + ".>",
		controlPrefix + child + ".*",
	}, sub
}

// DialParent connects to a parent's gateway as one process instance of child, with
// its sync token.
func DialParent(gateway, user, password, child, instance string, opts ...nats.Option) (*nats.Conn, error) {
	if err := ValidInstance(instance); err != nil {
		return nil, err
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
	}, opts...)
	nc, err := nats.Connect("nats://"+gateway, all...)
	if err != nil {
		return nil, fmt.Errorf("connect to parent gateway %s: %w", gateway, err)
	}
	return nc, nil
}
