package cachelayer

import (
	"context"

	"github.com/redis/rueidis"
)

// RedisSource hands the limiters, the write-behind counter and [OneShot] the Redis client to use now; an error means Redis is unavailable, and the
// limiter decides in process until a later call gets a client that answers. [*Client] (which connects and
// reconnects by itself, and may start without Redis) is one; [FixedRedis] makes one of a plain rueidis
// client. When the source also has a Failed(ctx, err) bool method, as [*Client] does, the limiters report
// to it the Redis failures they see.
type RedisSource interface {
	Rueidis() (rueidis.Client, error)
}

// FixedRedis is a [RedisSource] that always hands out r.
func FixedRedis(r rueidis.Client) RedisSource { return limitFixed{r} }

type limitFixed struct{ r rueidis.Client }

func (f limitFixed) Rueidis() (rueidis.Client, error) { return f.r, nil }

// sourceFailed tells src, when it wants to know, that a command failed
// because of Redis (see [Client.Failed]).
func sourceFailed(ctx context.Context, src RedisSource, err error) {
	if f, ok := src.(interface {
		Failed(ctx context.Context, err error) bool
	}); ok {
		f.Failed(ctx, err)
	}
}
