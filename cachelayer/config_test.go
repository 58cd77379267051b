package cachelayer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

func configEnv(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name string
		env  map[string]string
		want func(c *cachelayer.Config)
	}{
		{"defaults: the seed's", nil, func(c *cachelayer.Config) {}},
		{"every variable", map[string]string{
			"REDIS_URL":                "rediss://cache.internal:6380/2",
			"REDIS_PASSWORD":           "s3cret",
			"REDIS_DB":                 "4",
			"REDIS_POOL_SIZE":          "20",
			"REDIS_MIN_IDLE_CONNS":     "2",
			"REDIS_MAX_RETRIES":        "0",
			"REDIS_DIAL_TIMEOUT":       "2s",
			"REDIS_READ_TIMEOUT":       "500ms",
			"REDIS_WRITE_TIMEOUT":      "1",
			"REDIS_TLS_SKIP_VERIFY":    "true",
			"REDIS_CLIENT_CACHE_BYTES": "16MiB",
			"CACHE_ENTRY_TTL":          "120s",
			"CACHE_ACCOUNT_TTL":        "15m",
		}, func(c *cachelayer.Config) {
			c.URL, c.Password, c.DB = "rediss://cache.internal:6380/2", "s3cret", 4
			c.PoolSize, c.MinIdleConns, c.MaxRetries = 20, 2, 0
			c.DialTimeout, c.ReadTimeout, c.WriteTimeout = 2*time.Second, 500*time.Millisecond, time.Second
			c.TLSSkipVerify, c.ClientCacheBytes = true, 16<<20
			c.EntryTTL, c.AccountTTL = 120*time.Second, 15*time.Minute
		}},
		{"cache size in bytes, off with 0", map[string]string{"REDIS_CLIENT_CACHE_BYTES": "0"}, func(c *cachelayer.Config) {
			c.ClientCacheBytes = 0
		}},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := cachelayer.ConfigFromEnv(configEnv(test.env))
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			want := cachelayer.DefaultConfig()
			test.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// A bad value is an error that names the variable and says what it expects.
func TestConfigFromEnvErrors(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"REDIS_URL": "http://x"}, []string{"REDIS_URL", "redis://"}},
		{map[string]string{"REDIS_URL": "redis://:pw@h:6379/x"}, []string{"REDIS_URL", "xxxxx"}},
		{map[string]string{"REDIS_DB": "-1"}, []string{"REDIS_DB", "0 or more"}},
		{map[string]string{"REDIS_POOL_SIZE": "0"}, []string{"REDIS_POOL_SIZE", "1 or more"}},
		{map[string]string{"REDIS_MIN_IDLE_CONNS": "50"}, []string{"REDIS_MIN_IDLE_CONNS", "REDIS_POOL_SIZE"}},
		{map[string]string{"REDIS_MAX_RETRIES": "many"}, []string{"REDIS_MAX_RETRIES", "whole number"}},
		{map[string]string{"REDIS_DIAL_TIMEOUT": "soon"}, []string{"REDIS_DIAL_TIMEOUT", "duration"}},
		{map[string]string{"REDIS_READ_TIMEOUT": "-1s"}, []string{"REDIS_READ_TIMEOUT", "positive"}},
		{map[string]string{"REDIS_TLS_SKIP_VERIFY": "yes please"}, []string{"REDIS_TLS_SKIP_VERIFY", "true or false"}},
		{map[string]string{"REDIS_TLS_SKIP_VERIFY": "true"}, []string{"REDIS_TLS_SKIP_VERIFY", "rediss://"}},
		{map[string]string{"REDIS_CLIENT_CACHE_BYTES": "64MB"}, []string{"REDIS_CLIENT_CACHE_BYTES", "MiB"}},
		{map[string]string{"CACHE_ENTRY_TTL": "0s"}, []string{"CACHE_ENTRY_TTL", "positive"}},
		{map[string]string{"CACHE_ACCOUNT_TTL": "ten minutes"}, []string{"CACHE_ACCOUNT_TTL", "duration"}},
	} {
		_, err := cachelayer.ConfigFromEnv(configEnv(test.env))
		if err == nil {
			t.Errorf("ConfigFromEnv(%v) succeeded, want an error", test.env)
			continue
		}
		for _, w := range test.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ConfigFromEnv(%v) = %q, want it to mention %q", test.env, err, w)
			}
		}
		if strings.Contains(err.Error(), ":pw@") {
			t.Errorf("the error shows the password: %q", err)
		}
	}
}

// How the settings land on rueidis (the table in docs/REDIS.md).
func TestConfigClientOption(t *testing.T) {
	t.Parallel()
	c := cachelayer.DefaultConfig()
	c.URL = "rediss://user:urlpw@cache.internal:6380/2"
	c.Password = "envpw"
	c.DB = 5
	c.MaxRetries = 2
	c.ReadTimeout = 4 * time.Second
	c.WriteTimeout = time.Second
	c.TLSSkipVerify = true
	opt, err := c.ClientOption()
	if err != nil {
		t.Fatal(err)
	}
	type mapped struct {
		Addr                    []string
		User, Password          string
		DB                      int
		TLS, SkipVerify         bool
		Pool, MinIdle           int
		Cleanup                 time.Duration
		DisableRetry            bool
		Retries                 []time.Duration
		Dial, Conn              time.Duration
		CacheTotal              int64
		DisableCache            bool
		ClientTrackingBroadcast bool
	}
	var retries []time.Duration
	for attempt := 1; attempt <= 3; attempt++ {
		retries = append(retries, opt.RetryDelay(attempt, rueidis.Completed{}, nil))
	}
	got := mapped{
		Addr: opt.InitAddress, User: opt.Username, Password: opt.Password, DB: opt.SelectDB,
		TLS: opt.TLSConfig != nil, SkipVerify: opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify,
		Pool: opt.BlockingPoolSize, MinIdle: opt.BlockingPoolMinSize, Cleanup: opt.BlockingPoolCleanup,
		DisableRetry: opt.DisableRetry, Retries: retries,
		Dial: opt.Dialer.Timeout, Conn: opt.ConnWriteTimeout,
		CacheTotal:   int64(opt.CacheSizeEachConn) << opt.PipelineMultiplex,
		DisableCache: opt.DisableCache, ClientTrackingBroadcast: len(opt.ClientTrackingOptions) > 0,
	}
	want := mapped{
		Addr: []string{"cache.internal:6380"}, User: "user", Password: "envpw", DB: 5,
		TLS: true, SkipVerify: true,
		Pool: 10, MinIdle: 5, Cleanup: 5 * time.Minute,
		Retries: []time.Duration{time.Millisecond, 2 * time.Millisecond, -1},
		Dial:    5 * time.Second, Conn: 4 * time.Second,
		CacheTotal: 64 << 20,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rueidis options mismatch (-want +got):\n%s", diff)
	}

	c = cachelayer.DefaultConfig()
	c.URL = "redis://127.0.0.1:6379/3"
	c.MaxRetries = 0
	c.ClientCacheBytes = 0
	opt, err = c.ClientOption()
	if err != nil {
		t.Fatal(err)
	}
	if opt.SelectDB != 3 || !opt.DisableRetry || !opt.DisableCache || opt.TLSConfig != nil {
		t.Errorf("DB from the URL, no retries, no cache, no TLS: got SelectDB %d, DisableRetry %v, DisableCache %v, TLS %v",
			opt.SelectDB, opt.DisableRetry, opt.DisableCache, opt.TLSConfig != nil)
	}
}

// ConfigFromEnv never panics, and every error names a variable.
func FuzzConfigFromEnv(f *testing.F) {
	for _, s := range []string{"", "0", "64MiB", "300s", "redis://h:1/2", "rediss://u:p@h/0", "1e9", "-5", "99999999999999999999GiB", " 7 "} {
		f.Add(s, s)
	}
	names := []string{"REDIS_URL", "REDIS_DB", "REDIS_POOL_SIZE", "REDIS_MIN_IDLE_CONNS", "REDIS_MAX_RETRIES",
		"REDIS_DIAL_TIMEOUT", "REDIS_READ_TIMEOUT", "REDIS_WRITE_TIMEOUT", "REDIS_TLS_SKIP_VERIFY",
		"REDIS_CLIENT_CACHE_BYTES", "CACHE_ENTRY_TTL", "CACHE_ACCOUNT_TTL"}
	f.Fuzz(func(t *testing.T, a, b string) {
		for i, name := range names {
			env := map[string]string{name: a}
			if i%2 == 0 {
				env["REDIS_CLIENT_CACHE_BYTES"] = b
			}
			_, err := cachelayer.ConfigFromEnv(configEnv(env))
			if err == nil {
				continue
			}
			named := false
			for _, n := range names {
				named = named || strings.Contains(err.Error(), n)
			}
			if !named {
				t.Errorf("ConfigFromEnv(%v) = %q names no variable", env, err)
			}
		}
	})
}
