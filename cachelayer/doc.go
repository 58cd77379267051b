// Package cachelayer holds core-dict's Redis side, through rueidis: the client built from REDIS_URL with
// client-side caching (RESP3 CLIENT TRACKING), the cache strategies, locks, pipelines and MULTI/EXEC, and
// the rate limiters (the DICT's token bucket and a sliding window in Lua, GCRA through redis_rate).
//
// Keys are laid out for Redis Cluster: a multi-key script keeps its keys in one hash tag.
//
// Tests run against a real Redis: `scripts/deps.sh up` starts one on redis://127.0.0.1:6379/0 (REDIS_URL).
package cachelayer
