package cachelayer

import (
	"context"
	"errors"
	"time"

	"github.com/redis/rueidis"
)

// ErrTxAborted means EXEC ran nothing: a WATCHed key changed (retry the transaction) or a queued command
// was refused.
var ErrTxAborted = errors.New("cachelayer: transaction aborted")

// Pipeline sends cmds in one round trip (rueidis DoMulti: written back to back on one connection) and
// returns one result per command; each may hold its own Redis error. The error is [ErrUnavailable], or
// the first failure of Redis itself (then the client probes, see [Client.Failed]). Commands are not
// atomic: use [Client.Tx] for that. Build commands with the [rueidis.Client] of [Client.Rueidis].
func (c *Client) Pipeline(ctx context.Context, cmds ...rueidis.Completed) ([]rueidis.RedisResult, error) {
	rc, err := c.Rueidis()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res := rc.DoMulti(ctx, cmds...)
	c.metrics.observe("pipeline", start)
	for _, r := range res {
		if err := r.Error(); c.Failed(ctx, err) || err != nil && ctx.Err() != nil {
			return res, err
		}
	}
	return res, nil
}

// Tx runs cmds atomically: MULTI, cmds, EXEC in one round trip, and returns EXEC's replies, one per
// command. A command Redis refuses to queue aborts the whole transaction ([ErrTxAborted], wrapping the
// refusal). On Redis Cluster every key must be in one slot (one hash tag).
func (c *Client) Tx(ctx context.Context, cmds ...rueidis.Completed) ([]rueidis.RedisMessage, error) {
	rc, err := c.Rueidis()
	if err != nil {
		return nil, err
	}
	multi := make(rueidis.Commands, 0, len(cmds)+2)
	multi = append(multi, rc.B().Multi().Build())
	multi = append(multi, cmds...)
	multi = append(multi, rc.B().Exec().Build())
	start := time.Now()
	res := rc.DoMulti(ctx, multi...)
	c.metrics.observe("tx", start)
	return pipeTxReplies(ctx, c, res)
}

// WatchTx runs an optimistic transaction on a dedicated connection: WATCH keys, then build reads with the
// dedicated client and return the commands to run, which run in MULTI/EXEC only if no watched key changed
// meanwhile; otherwise it returns [ErrTxAborted] and the caller retries. An error from build discards the
// transaction and is returned as is.
func (c *Client) WatchTx(ctx context.Context, keys []string, build func(ctx context.Context, dc rueidis.DedicatedClient) ([]rueidis.Completed, error)) ([]rueidis.RedisMessage, error) {
	rc, err := c.Rueidis()
	if err != nil {
		return nil, err
	}
	var out []rueidis.RedisMessage
	start := time.Now()
	err = rc.Dedicated(func(dc rueidis.DedicatedClient) error {
		if err := dc.Do(ctx, dc.B().Watch().Key(keys...).Build()).Error(); err != nil {
			c.Failed(ctx, err)
			return err
		}
		cmds, err := build(ctx, dc)
		if err != nil {
			dc.Do(ctx, dc.B().Unwatch().Build())
			return err
		}
		multi := make(rueidis.Commands, 0, len(cmds)+2)
		multi = append(multi, dc.B().Multi().Build())
		multi = append(multi, cmds...)
		multi = append(multi, dc.B().Exec().Build())
		out, err = pipeTxReplies(ctx, c, dc.DoMulti(ctx, multi...))
		return err
	})
	c.metrics.observe("tx", start)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pipeTxReplies reads the replies of MULTI, the queued commands and EXEC.
func pipeTxReplies(ctx context.Context, c *Client, res []rueidis.RedisResult) ([]rueidis.RedisMessage, error) {
	for _, r := range res[:len(res)-1] {
		if err := r.Error(); err != nil {
			if c.Failed(ctx, err) || ctx.Err() != nil {
				return nil, err
			}
			return nil, errors.Join(ErrTxAborted, err)
		}
	}
	exec := res[len(res)-1]
	if err := exec.Error(); err != nil {
		if rueidis.IsRedisNil(err) {
			return nil, ErrTxAborted // a WATCHed key changed
		}
		if c.Failed(ctx, err) || ctx.Err() != nil {
			return nil, err
		}
		return nil, errors.Join(ErrTxAborted, err)
	}
	return exec.ToArray()
}
