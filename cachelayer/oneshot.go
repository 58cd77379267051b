package cachelayer

import (
	"context"
	"errors"
	"time"

	"github.com/redis/rueidis"
)

// OneShot stores short-lived values that can be taken exactly once (SET
// with expiry, then GETDEL): core-dict keeps each lookup's end-to-end id so
// that the payment that follows can credit the anti-scanning buckets once,
// and only for a lookup that really happened.
type OneShot struct {
	src    RedisSource
	prefix string
	ttl    time.Duration
}

// NewOneShot returns a store of values under prefix, each living ttl.
func NewOneShot(src RedisSource, prefix string, ttl time.Duration) *OneShot {
	return &OneShot{src: src, prefix: prefix, ttl: ttl}
}

// Put stores value under id, unless id is already stored.
func (o *OneShot) Put(ctx context.Context, id, value string) error {
	r, err := o.src.Rueidis()
	if err != nil {
		return err
	}
	err = r.Do(ctx, r.B().Set().Key(o.prefix+id).Value(value).Nx().Px(o.ttl).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil
	}
	if err != nil {
		sourceFailed(ctx, o.src, err)
	}
	return err
}

// Take returns and removes the value under id; ok is false when there is
// none.
func (o *OneShot) Take(ctx context.Context, id string) (value string, ok bool, err error) {
	r, err := o.src.Rueidis()
	if err != nil {
		return "", false, err
	}
	v, err := r.Do(ctx, r.B().Getdel().Key(o.prefix+id).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", false, nil
	}
	if err != nil {
		sourceFailed(ctx, o.src, err)
		return "", false, errors.Join(errors.New("one-shot take"), err)
	}
	return v, true, nil
}
