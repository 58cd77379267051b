package eventbus_test

import (
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/eventbus"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	all := map[string]string{
		"PULSAR_URL":                   "pulsar+ssl://broker.example:6651",
		"PULSAR_TOPIC_KEY_EVENTS":      "persistent://t/n/keys",
		"PULSAR_TOPIC_CLAIM_EVENTS":    "persistent://t/n/claims",
		"PULSAR_TOPIC_DICT_REQ_OUT":    "persistent://t/n/req",
		"PULSAR_TOPIC_DICT_RES_IN":     "persistent://t/n/res",
		"PULSAR_CONSUMER_SUBSCRIPTION": "sub-1",
		"PULSAR_CONSUMER_TYPE":         "key_shared",
		"PULSAR_SEND_TIMEOUT":          "5s",
		"PULSAR_BATCH_MAX_MESSAGES":    "50",
		"PULSAR_BATCH_MAX_DELAY":       "2ms",
		"PULSAR_DLQ_TOPIC":             "persistent://t/dlq/failed",
		"PULSAR_MAX_REDELIVERY":        "7",
	}
	for _, test := range []struct {
		name    string
		env     map[string]string
		want    eventbus.Config
		wantErr []string // variables the error must name
	}{
		{name: "defaults", env: nil, want: eventbus.DefaultConfig()},
		{name: "all set", env: all, want: eventbus.Config{
			URL:              "pulsar+ssl://broker.example:6651",
			TopicKeyEvents:   "persistent://t/n/keys",
			TopicClaimEvents: "persistent://t/n/claims",
			TopicDictReqOut:  "persistent://t/n/req",
			TopicDictResIn:   "persistent://t/n/res",
			Subscription:     "sub-1",
			ConsumerType:     pulsar.KeyShared,
			SendTimeout:      5 * time.Second,
			BatchMaxMessages: 50,
			BatchMaxDelay:    2 * time.Millisecond,
			DLQTopic:         "persistent://t/dlq/failed",
			MaxRedelivery:    7,
		}},
		{name: "bad values", env: map[string]string{
			"PULSAR_URL":                "http://127.0.0.1:8080",
			"PULSAR_TOPIC_KEY_EVENTS":   "key-events",
			"PULSAR_CONSUMER_TYPE":      "round_robin",
			"PULSAR_SEND_TIMEOUT":       "30",
			"PULSAR_BATCH_MAX_MESSAGES": "0",
			"PULSAR_BATCH_MAX_DELAY":    "-1ms",
			"PULSAR_MAX_REDELIVERY":     "many",
		}, wantErr: []string{"PULSAR_URL", "PULSAR_TOPIC_KEY_EVENTS", "PULSAR_CONSUMER_TYPE", "PULSAR_SEND_TIMEOUT",
			"PULSAR_BATCH_MAX_MESSAGES", "PULSAR_BATCH_MAX_DELAY", "PULSAR_MAX_REDELIVERY"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := eventbus.ConfigFromEnv(func(k string) string { return test.env[k] })
			if len(test.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ConfigFromEnv() = %+v, want an error", got)
				}
				for _, name := range test.wantErr {
					if !strings.Contains(err.Error(), name) {
						t.Errorf("error %q does not name %s", err, name)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			if diff := cmp.Diff(test.want, got); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSubscriptionType(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]pulsar.SubscriptionType{
		"shared": pulsar.Shared, "key_shared": pulsar.KeyShared, "failover": pulsar.Failover, "exclusive": pulsar.Exclusive,
	} {
		got, err := eventbus.ParseSubscriptionType(in)
		if err != nil || got != want {
			t.Errorf("ParseSubscriptionType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := eventbus.ParseSubscriptionType("key-shared-ish"); err == nil {
		t.Error("ParseSubscriptionType accepted an unknown type")
	}
}
