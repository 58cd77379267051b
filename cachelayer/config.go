package cachelayer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Config holds the seed's Redis settings, one field per environment variable (see [ConfigFromEnv]).
// [DefaultConfig] gives the seed's defaults; [Config.ClientOption] maps the settings onto rueidis.
type Config struct {
	// URL is REDIS_URL: redis://[user:password@]host:port/db, or rediss:// for TLS.
	URL string
	// Password is REDIS_PASSWORD; when set it replaces the password in URL.
	Password string
	// DB is REDIS_DB; when 0 or more it replaces the database number in URL. -1 keeps the URL's.
	DB int
	// PoolSize is REDIS_POOL_SIZE: the connections for blocking commands, dedicated clients and WATCH
	// transactions (rueidis pipelines everything else over a few shared connections).
	PoolSize int
	// MinIdleConns is REDIS_MIN_IDLE_CONNS: how many idle pooled connections the idle cleanup keeps.
	MinIdleConns int
	// MaxRetries is REDIS_MAX_RETRIES: retries of a read-only command after a network error (0: none).
	MaxRetries int
	// DialTimeout is REDIS_DIAL_TIMEOUT: the limit on opening one connection (TCP and TLS).
	DialTimeout time.Duration
	// ReadTimeout is REDIS_READ_TIMEOUT and WriteTimeout REDIS_WRITE_TIMEOUT; rueidis has one deadline per
	// connection for both directions, so the larger of the two applies.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// TLSSkipVerify is REDIS_TLS_SKIP_VERIFY: accept any server certificate (rediss:// only; tests only).
	TLSSkipVerify bool
	// ClientCacheBytes is REDIS_CLIENT_CACHE_BYTES: the size of the client-side cache, all connections to
	// one Redis node together. 0 turns client-side caching off.
	ClientCacheBytes int64
	// EntryTTL is CACHE_ENTRY_TTL: how long the PSP's own entries stay cached.
	EntryTTL time.Duration
	// AccountTTL is CACHE_ACCOUNT_TTL: how long account data stays cached.
	AccountTTL time.Duration
}

// DefaultConfig returns the seed's defaults, for the local Redis that scripts/deps.sh starts.
func DefaultConfig() Config {
	return Config{
		URL:              "redis://127.0.0.1:6379/0",
		DB:               -1,
		PoolSize:         10,
		MinIdleConns:     5,
		MaxRetries:       3,
		DialTimeout:      5 * time.Second,
		ReadTimeout:      3 * time.Second,
		WriteTimeout:     3 * time.Second,
		ClientCacheBytes: 64 << 20,
		EntryTTL:         300 * time.Second,
		AccountTTL:       600 * time.Second,
	}
}

// configIdleCleanup is how often idle pooled connections beyond MinIdleConns are closed: the seed's
// ConnMaxIdleTime default, which has no environment variable of its own.
const configIdleCleanup = 5 * time.Minute

// ConfigFromEnv reads the settings from getenv (os.Getenv in main), starting from [DefaultConfig]; an
// unset or empty variable keeps its default. A bad value is an error naming the variable and what it
// expects. Durations are Go durations ("300s", "1m") or whole seconds ("300"); REDIS_CLIENT_CACHE_BYTES is a
// byte count with an optional KiB, MiB or GiB suffix.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	var errs []error
	str := func(name string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	num := func(name string, min int, dst *int) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			errs = append(errs, fmt.Errorf("%s=%q: want a whole number, %d or more", name, v, min))
			return
		}
		*dst = n
	}
	dur := func(name string, dst *time.Duration) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return
		}
		d, err := configParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 300s or 1m", name, v))
			return
		}
		*dst = d
	}
	str("REDIS_URL", &c.URL)
	c.Password = getenv("REDIS_PASSWORD")
	num("REDIS_DB", 0, &c.DB)
	num("REDIS_POOL_SIZE", 1, &c.PoolSize)
	num("REDIS_MIN_IDLE_CONNS", 0, &c.MinIdleConns)
	num("REDIS_MAX_RETRIES", 0, &c.MaxRetries)
	dur("REDIS_DIAL_TIMEOUT", &c.DialTimeout)
	dur("REDIS_READ_TIMEOUT", &c.ReadTimeout)
	dur("REDIS_WRITE_TIMEOUT", &c.WriteTimeout)
	dur("CACHE_ENTRY_TTL", &c.EntryTTL)
	dur("CACHE_ACCOUNT_TTL", &c.AccountTTL)
	if v := strings.TrimSpace(getenv("REDIS_TLS_SKIP_VERIFY")); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("REDIS_TLS_SKIP_VERIFY=%q: want true or false", v))
		}
		c.TLSSkipVerify = b
	}
	if v := strings.TrimSpace(getenv("REDIS_CLIENT_CACHE_BYTES")); v != "" {
		n, err := configParseBytes(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("REDIS_CLIENT_CACHE_BYTES=%q: want a byte count such as 67108864 or 64MiB (0 turns the client-side cache off)", v))
		}
		c.ClientCacheBytes = n
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	if _, err := c.ClientOption(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ClientOption maps the settings onto rueidis. rueidis pipelines every command of every goroutine over a
// few shared connections per Redis node (2^PipelineMultiplex of them) and keeps the client-side cache per
// connection, so some pool settings of a classic client mean something else here:
//
//	setting                   rueidis option                       what it controls
//	REDIS_URL                 InitAddress, TLSConfig, SelectDB,    node address (cluster detected by rueidis), rediss:// turns
//	                          Username, Password                   TLS on, /N selects database N
//	REDIS_PASSWORD            Password                             AUTH password (replaces the URL's)
//	REDIS_DB                  SelectDB                             SELECT after connecting (replaces the URL's /N)
//	REDIS_POOL_SIZE           BlockingPoolSize                     connections for blocking commands, Dedicated clients and
//	                                                               WATCH transactions; ordinary commands never wait for it
//	REDIS_MIN_IDLE_CONNS      BlockingPoolMinSize (with            idle pooled connections kept when the cleanup (every 5 min)
//	                          BlockingPoolCleanup = 5 min)         closes the rest; rueidis does not pre-dial them
//	REDIS_MAX_RETRIES         DisableRetry (0) / RetryDelay        retries of read-only commands after a network error,
//	                                                               1 ms doubling to 100 ms; writes and scripts are not retried
//	REDIS_DIAL_TIMEOUT        Dialer.Timeout                       opening one TCP (and TLS) connection
//	REDIS_READ_TIMEOUT,       ConnWriteTimeout = the larger        how long a connection waits for a write or for the reply to a
//	REDIS_WRITE_TIMEOUT                                            pipelined command before it is closed and replaced
//	REDIS_TLS_SKIP_VERIFY     TLSConfig.InsecureSkipVerify         rediss:// only
//	REDIS_CLIENT_CACHE_BYTES  CacheSizeEachConn = bytes divided    the client-side cache (RESP3 CLIENT TRACKING, OPTIN mode: only
//	                          over the pipelined connections;      DoCache reads are tracked); 0 turns it off
//	                          DisableCache when 0
//	(none)                    PipelineMultiplex                    2^n pipelined connections per node: n = log2(GOMAXPROCS),
//	                                                               at most 2 (rueidis' own rule, fixed here to size the cache)
//
// CACHE_ENTRY_TTL and CACHE_ACCOUNT_TTL are not rueidis settings: the cache strategies use them.
func (c Config) ClientOption() (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(c.URL)
	if err != nil {
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_URL=%q: want redis://host:port/db or rediss://host:port/db: %w", configRedactURL(c.URL), err)
	}
	if c.Password != "" {
		opt.Password = c.Password
	}
	if c.DB >= 0 {
		opt.SelectDB = c.DB
	}
	if c.TLSSkipVerify {
		if opt.TLSConfig == nil {
			return rueidis.ClientOption{}, errors.New("REDIS_TLS_SKIP_VERIFY=true: want a rediss:// REDIS_URL (TLS is off for redis://)")
		}
		opt.TLSConfig.InsecureSkipVerify = true
	}
	if opt.TLSConfig != nil && opt.TLSConfig.MinVersion == 0 {
		opt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	if c.PoolSize < 1 {
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_POOL_SIZE=%d: want 1 or more", c.PoolSize)
	}
	if c.MinIdleConns < 0 || c.MinIdleConns > c.PoolSize {
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_MIN_IDLE_CONNS=%d: want 0 to REDIS_POOL_SIZE (%d)", c.MinIdleConns, c.PoolSize)
	}
	opt.BlockingPoolSize = c.PoolSize
	opt.BlockingPoolMinSize = c.MinIdleConns
	opt.BlockingPoolCleanup = configIdleCleanup
	switch {
	case c.MaxRetries < 0:
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_MAX_RETRIES=%d: want 0 or more", c.MaxRetries)
	case c.MaxRetries == 0:
		opt.DisableRetry = true
	default:
		max := c.MaxRetries
		opt.RetryDelay = func(attempts int, _ rueidis.Completed, _ error) time.Duration {
			if attempts > max {
				return -1
			}
			return min(100*time.Millisecond, time.Millisecond<<min(attempts-1, 10))
		}
	}
	if c.DialTimeout <= 0 || c.ReadTimeout <= 0 || c.WriteTimeout <= 0 {
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_DIAL_TIMEOUT, REDIS_READ_TIMEOUT, REDIS_WRITE_TIMEOUT (%v, %v, %v): want positive durations", c.DialTimeout, c.ReadTimeout, c.WriteTimeout)
	}
	opt.Dialer.Timeout = c.DialTimeout
	opt.ConnWriteTimeout = max(c.ReadTimeout, c.WriteTimeout)
	opt.PipelineMultiplex = configMultiplex()
	switch {
	case c.ClientCacheBytes < 0:
		return rueidis.ClientOption{}, fmt.Errorf("REDIS_CLIENT_CACHE_BYTES=%d: want 0 or more", c.ClientCacheBytes)
	case c.ClientCacheBytes == 0:
		opt.DisableCache = true
	default:
		each := c.ClientCacheBytes >> opt.PipelineMultiplex
		if each > math.MaxInt32 {
			each = math.MaxInt32
		}
		opt.CacheSizeEachConn = int(max(each, 1))
	}
	if opt.ClientName == "" {
		opt.ClientName = "core-dict"
	}
	return opt, nil
}

// configMultiplex is rueidis' rule for a single node (log2 of GOMAXPROCS, at most 2), fixed here so that
// the client-side cache can be divided between the connections.
func configMultiplex() int {
	n := int(math.Log2(float64(runtime.GOMAXPROCS(0))))
	return min(max(n, 0), 2)
}

func configParseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(v)
}

func configParseBytes(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, errors.New("bad byte count")
	}
	return n * mult, nil
}

// configRedactURL hides the password of a Redis URL in messages.
func configRedactURL(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		rest := raw[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				return raw[:i+3] + rest[:colon] + ":xxxxx" + rest[at:]
			}
		}
	}
	return raw
}
