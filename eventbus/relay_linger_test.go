package eventbus

import (
	"testing"
	"time"
)

// TestLingerAfter: the linger counts from a round's start, so a slow round is not followed by the whole
// linger on top of it; a full round, or no linger, means no wait.
func TestLingerAfter(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		linger, took time.Duration
		n, batch     int
		want         time.Duration
	}{
		{25 * ms, 5 * ms, 3, 500, 20 * ms},    // a quick round of a trickle: the rest of the linger
		{25 * ms, 0, 1, 500, 25 * ms},         // the whole linger
		{25 * ms, 25 * ms, 3, 500, 0},         // the round took the linger: next at once
		{25 * ms, 80 * ms, 3, 500, 0},         // a slow round (busy machine): not 25 ms more
		{25 * ms, 5 * ms, 500, 500, 0},        // a full round: a backlog, next at once
		{0, 5 * ms, 3, 500, 0},                // linger off
		{300 * ms, 20 * ms, 2, 500, 280 * ms}, // TestRelayLingerGathersTrickle's linger
	} {
		if got := lingerAfter(c.linger, c.took, c.n, c.batch); got != c.want {
			t.Errorf("lingerAfter(%v, took %v, %d of %d rows) = %v, want %v", c.linger, c.took, c.n, c.batch, got, c.want)
		}
	}
}
