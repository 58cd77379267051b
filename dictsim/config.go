package dictsim

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
)

// Defaults of [Config].
const (
	DefaultRequestTopic = "persistent://lb-conn/dict/rsfn-dict-req-out"
	DefaultSubscription = "dictsim"
	DefaultCategory     = "A"
)

// Config is everything [New] needs.
type Config struct {
	// DatabaseURL is the simulator's own PostgreSQL database (DICTSIM_DATABASE_URL), migrated with
	// [Migrate]. Ignored when Pool is set.
	DatabaseURL string
	// Pool, when set, is used instead of opening DatabaseURL; the caller closes it.
	Pool *pgxpool.Pool
	// Pulsar is the broker (PULSAR_URL and the other PULSAR_* settings).
	Pulsar eventbus.Config
	// RequestTopic is where every participant's DirectoryRequests arrive (PULSAR_TOPIC_DICT_REQ_OUT).
	RequestTopic string
	// Subscription is the Key_Shared subscription on RequestTopic (default "dictsim"); several
	// simulator instances on one subscription share the keys, each key on one instance, in order.
	Subscription string
	// Workers is how many requests are handled at once (default 4), spread by key.
	Workers int
	// DefaultCategory is the anti-scan category (A-H) of participants not in Categories (default A).
	DefaultCategory string
	// Categories gives some participants (by ISPB) another category.
	Categories map[string]string
	// NoticeTopics sets where a participant's DirectoryNotices go (ISPB → topic); a participant not
	// listed gets them on the reply_to of its latest write request.
	NoticeTopics map[string]string
	// Now is the clock (default time.Now); tests move it to pass claim deadlines.
	Now func() time.Time
	// Logger gets one line per request (default slog.Default()).
	Logger *slog.Logger
	// Registerer gets dictsim_requests_total and the Pulsar client's metrics (default: a new,
	// private registry).
	Registerer prometheus.Registerer
}

// ConfigFromEnv reads the simulator's settings through getenv (os.Getenv in main):
// DICTSIM_DATABASE_URL, the PULSAR_* variables of [eventbus.ConfigFromEnv] (PULSAR_TOPIC_DICT_REQ_OUT
// is the request topic), DICTSIM_SUBSCRIPTION, DICTSIM_PARTICIPANT_CATEGORY ("A", or "A,12345678=H,..."
// for a default and per-participant categories) and DICTSIM_NOTICE_TOPICS ("ispb=topic,...").
// The first bad value is an error naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	pc, err := eventbus.ConfigFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	c := Config{
		DatabaseURL:     getenv("DICTSIM_DATABASE_URL"),
		Pulsar:          pc,
		RequestTopic:    pc.TopicDictReqOut,
		Subscription:    getenv("DICTSIM_SUBSCRIPTION"),
		DefaultCategory: DefaultCategory,
		Categories:      map[string]string{},
		NoticeTopics:    map[string]string{},
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = "postgres://coredict:coredict@127.0.0.1:5432/dictsim?sslmode=disable"
	}
	if v := getenv("DICTSIM_PARTICIPANT_CATEGORY"); v != "" {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			ispb, cat, per := strings.Cut(item, "=")
			if !per {
				cat = ispb
			}
			cat = strings.ToUpper(strings.TrimSpace(cat))
			if _, ok := dict.ParticipantBuckets[cat]; !ok || (per && !dict.IsISPB(strings.TrimSpace(ispb))) {
				return Config{}, fmt.Errorf("DICTSIM_PARTICIPANT_CATEGORY=%q: want a category A to H, optionally followed by ISPB=category pairs, comma-separated", v)
			}
			if per {
				c.Categories[strings.TrimSpace(ispb)] = cat
			} else {
				c.DefaultCategory = cat
			}
		}
	}
	if v := getenv("DICTSIM_NOTICE_TOPICS"); v != "" {
		for _, item := range strings.Split(v, ",") {
			ispb, topic, ok := strings.Cut(strings.TrimSpace(item), "=")
			ispb, topic = strings.TrimSpace(ispb), strings.TrimSpace(topic)
			if !ok || !dict.IsISPB(ispb) || !strings.Contains(topic, "://") {
				return Config{}, fmt.Errorf("DICTSIM_NOTICE_TOPICS=%q: want ISPB=persistent://tenant/namespace/topic pairs, comma-separated", v)
			}
			c.NoticeTopics[ispb] = topic
		}
	}
	return c, nil
}
