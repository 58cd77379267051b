package eventbus

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
)

// Config is the Pulsar part of core-dict's configuration, read once from the environment by
// [ConfigFromEnv]. The variable names are the seed's.
type Config struct {
	// URL is the broker's service URL (PULSAR_URL), pulsar:// or pulsar+ssl://.
	URL string
	// TopicKeyEvents receives KeyCreated, KeyUpdated and KeyDeleted (PULSAR_TOPIC_KEY_EVENTS).
	TopicKeyEvents string
	// TopicClaimEvents receives the claim and portability events (PULSAR_TOPIC_CLAIM_EVENTS).
	TopicClaimEvents string
	// TopicDictReqOut carries requests to the central directory through the connector (PULSAR_TOPIC_DICT_REQ_OUT).
	TopicDictReqOut string
	// TopicDictResIn carries the directory's responses back (PULSAR_TOPIC_DICT_RES_IN).
	TopicDictResIn string
	// Subscription is the consumers' subscription name (PULSAR_CONSUMER_SUBSCRIPTION).
	Subscription string
	// ConsumerType is the subscription type (PULSAR_CONSUMER_TYPE: shared, key_shared, failover or exclusive).
	ConsumerType pulsar.SubscriptionType
	// SendTimeout bounds how long a publish waits for the broker (PULSAR_SEND_TIMEOUT).
	SendTimeout time.Duration
	// BatchMaxMessages and BatchMaxDelay close a batch at whichever comes first (PULSAR_BATCH_MAX_MESSAGES,
	// PULSAR_BATCH_MAX_DELAY).
	BatchMaxMessages uint
	BatchMaxDelay    time.Duration
	// DLQTopic receives the events a handler failed MaxRedelivery times (PULSAR_DLQ_TOPIC).
	DLQTopic string
	// MaxRedelivery is how many deliveries a failing event gets before it goes to DLQTopic (PULSAR_MAX_REDELIVERY).
	MaxRedelivery uint32
}

// DefaultConfig returns the configuration used when no variable is set: a local standalone broker and the
// seed's topics.
func DefaultConfig() Config {
	return Config{
		URL:              "pulsar://127.0.0.1:6650",
		TopicKeyEvents:   "persistent://dict/events/key-events",
		TopicClaimEvents: "persistent://dict/events/claim-events",
		TopicDictReqOut:  "persistent://lb-conn/dict/rsfn-dict-req-out",
		TopicDictResIn:   "persistent://lb-conn/dict/rsfn-dict-res-in",
		Subscription:     "core-dict-sub",
		ConsumerType:     pulsar.Shared,
		SendTimeout:      30 * time.Second,
		BatchMaxMessages: 100,
		BatchMaxDelay:    10 * time.Millisecond,
		DLQTopic:         "persistent://core-dict/dlq/failed-events",
		MaxRedelivery:    5,
	}
}

// ConfigFromEnv reads the PULSAR_* variables through getenv (os.Getenv in main, a map in tests), starting
// from [DefaultConfig] for the ones that are unset or empty. Every problem found is reported, each naming
// the variable and what it expects.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := DefaultConfig()
	var errs []error
	bad := func(name, value, expects string) {
		errs = append(errs, fmt.Errorf("%s=%q: expected %s", name, value, expects))
	}

	if v := getenv("PULSAR_URL"); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "pulsar" && u.Scheme != "pulsar+ssl") || u.Host == "" {
			bad("PULSAR_URL", v, "a pulsar:// or pulsar+ssl:// URL with a host, e.g. pulsar://127.0.0.1:6650")
		} else {
			cfg.URL = v
		}
	}
	for _, t := range []struct {
		name string
		into *string
	}{
		{"PULSAR_TOPIC_KEY_EVENTS", &cfg.TopicKeyEvents},
		{"PULSAR_TOPIC_CLAIM_EVENTS", &cfg.TopicClaimEvents},
		{"PULSAR_TOPIC_DICT_REQ_OUT", &cfg.TopicDictReqOut},
		{"PULSAR_TOPIC_DICT_RES_IN", &cfg.TopicDictResIn},
		{"PULSAR_DLQ_TOPIC", &cfg.DLQTopic},
	} {
		v := getenv(t.name)
		if v == "" {
			continue
		}
		if !validTopic(v) {
			bad(t.name, v, "a full topic name, persistent://tenant/namespace/topic")
			continue
		}
		*t.into = v
	}
	if v := getenv("PULSAR_CONSUMER_SUBSCRIPTION"); v != "" {
		if strings.ContainsAny(v, " /\t\n") {
			bad("PULSAR_CONSUMER_SUBSCRIPTION", v, "a subscription name without spaces or slashes")
		} else {
			cfg.Subscription = v
		}
	}
	if v := getenv("PULSAR_CONSUMER_TYPE"); v != "" {
		t, err := ParseSubscriptionType(v)
		if err != nil {
			bad("PULSAR_CONSUMER_TYPE", v, "one of shared, key_shared, failover, exclusive")
		} else {
			cfg.ConsumerType = t
		}
	}
	for _, d := range []struct {
		name string
		into *time.Duration
	}{
		{"PULSAR_SEND_TIMEOUT", &cfg.SendTimeout},
		{"PULSAR_BATCH_MAX_DELAY", &cfg.BatchMaxDelay},
	} {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur <= 0 {
			bad(d.name, v, "a positive Go duration, e.g. 30s or 10ms")
			continue
		}
		*d.into = dur
	}
	if v := getenv("PULSAR_BATCH_MAX_MESSAGES"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			bad("PULSAR_BATCH_MAX_MESSAGES", v, "a positive integer, e.g. 100")
		} else {
			cfg.BatchMaxMessages = uint(n)
		}
	}
	if v := getenv("PULSAR_MAX_REDELIVERY"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			bad("PULSAR_MAX_REDELIVERY", v, "a positive integer, e.g. 5")
		} else {
			cfg.MaxRedelivery = uint32(n)
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// ParseSubscriptionType maps PULSAR_CONSUMER_TYPE's values to Pulsar's subscription types.
func ParseSubscriptionType(s string) (pulsar.SubscriptionType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "shared":
		return pulsar.Shared, nil
	case "key_shared":
		return pulsar.KeyShared, nil
	case "failover":
		return pulsar.Failover, nil
	case "exclusive":
		return pulsar.Exclusive, nil
	}
	return 0, fmt.Errorf("eventbus: unknown subscription type %q (want shared, key_shared, failover or exclusive)", s)
}

func validTopic(s string) bool {
	rest, ok := strings.CutPrefix(s, "persistent://")
	if !ok {
		rest, ok = strings.CutPrefix(s, "non-persistent://")
	}
	if !ok {
		return false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t\n") {
			return false
		}
	}
	return true
}
