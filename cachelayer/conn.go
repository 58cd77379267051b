package cachelayer

import (
	"context"

	"github.com/redis/rueidis"
)

// Conn is what the limiters, the write-behind counter and [OneShot] need
// of a Redis client: a working rueidis client or [ErrUnavailable], and a
// way to report that a command failed because Redis did. [*Client] is one;
// [Static] wraps a plain rueidis client.
type Conn interface {
	Rueidis() (rueidis.Client, error)
	Failed(ctx context.Context, err error) bool
}

// Static returns a [Conn] over r that is always available; r reconnects
// by itself after network errors.
func Static(r rueidis.Client) Conn { return staticConn{r} }

type staticConn struct{ r rueidis.Client }

func (s staticConn) Rueidis() (rueidis.Client, error)   { return s.r, nil }
func (s staticConn) Failed(context.Context, error) bool { return false }
