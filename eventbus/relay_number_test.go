package eventbus

import (
	"testing"

	"github.com/lbpay-lab/core-dict/sqlc"
)

// TestNumberRound: sequence ids follow the round's order from next; batches are runs of at most
// maxBatch rows per topic, named by their first row's id, topics interleaved as the rows come.
func TestNumberRound(t *testing.T) {
	topics := []string{"a", "b", "a", "a", "b", "a", "c", "a"}
	rows := make([]outboxRow, len(topics))
	for i, topic := range topics {
		rows[i] = outboxRow{OutboxRoundRow: sqlc.OutboxRoundRow{Topic: topic, Seq: int64(100 + i)}}
	}
	numberRound(rows, 40, 2)
	wantBatch := []int64{
		40, // a: run 1 (40, 42)
		41, // b: run 1 (41, 44)
		40,
		43, // a: run 2 (43, 45)
		41,
		43,
		46, // c: run 1
		47, // a: run 3
	}
	for i, r := range rows {
		if r.LaneSeq != 40+int64(i) || r.LaneBatch != wantBatch[i] {
			t.Errorf("row %d (%s): sequence %d batch %d, want %d and %d", i, r.Topic, r.LaneSeq, r.LaneBatch, 40+i, wantBatch[i])
		}
	}
	// The same rows numbered afresh (a re-sent round) come out alike.
	again := make([]outboxRow, len(rows))
	for i, r := range rows {
		again[i] = outboxRow{OutboxRoundRow: r.OutboxRoundRow}
	}
	numberRound(again, 40, 2)
	for i := range rows {
		if again[i].LaneSeq != rows[i].LaneSeq || again[i].LaneBatch != rows[i].LaneBatch {
			t.Errorf("row %d numbered %d/%d, then %d/%d", i, rows[i].LaneSeq, rows[i].LaneBatch, again[i].LaneSeq, again[i].LaneBatch)
		}
	}
}
