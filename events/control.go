package events

import (
	"fmt"
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

// childPermissions is all a child may do at its parent's gateway: drain its own
// outbox, and send control requests in its own name. Replies come on its own inbox
// prefix; the shared _INBOX.> would expose other clients' replies.
func childPermissions(child string) (pub, sub []string) {
	out := DownstreamOutbox(child)
	return []string{
			"$JS.API.CONSUMER.INFO." + out + "." + drainConsumer,
			"$JS.API.STREAM.INFO." + out, // to see messages that expired before it came
			"$JS.API.CONSUMER.MSG.NEXT." + out + "." + drainConsumer,
			"$JS.ACK." + out + "." + drainConsumer + ".>",
			controlPrefix + child + ".*",
		},
		[]string{inboxPrefix(child) + ".>"}
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
