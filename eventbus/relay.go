package eventbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/sqlc"
)

// Relay publishes the outbox rows that dict's transactions committed to Pulsar, in order per partition
// key, each exactly once as the consumers see it.
//
// The outbox is split into lanes by partition key (schema/00003_outbox_relay.sql). A relay leases lanes
// in outbox_lanes (FOR UPDATE SKIP LOCKED, renewed while it runs, released when [Relay.Run] returns), so
// only one instance publishes a lane and several instances share the work. The outbox is insert-only
// (schema/00012_outbox_insert_only.sql): a lane is published in batches of the rows whose transactions
// committed between two snapshots the relay took, each in insert order, a round of at most the batch
// size at a time. For each lane it holds, the relay first commits the round it is about to send in the
// lane's row (one UPDATE, no outbox row is written), then sends it through a producer whose name is fixed
// per topic and lane, each Pulsar batch as one entry under its first row's sequence id, and marks the
// round published only once the broker acknowledged all of it. A relay that dies after sending and
// before marking leaves the round in flight: its successor re-sends the same rows in the same batches
// under the same producer names and sequence ids, and the broker's deduplication drops the batches it
// already holds, whole.
//
// It is woken by LISTEN/NOTIFY on the channel "outbox" and also polls, so a lost notification only
// delays a row by one poll interval. It deletes the rows published longer than the retention ago
// ([WithRelayRetention]).
type Relay struct {
	pool     *pgxpool.Pool
	client   pulsar.Client
	q        *sqlc.Queries
	owner    string
	maxLanes int
	batch    int
	poll     time.Duration
	ttl      time.Duration
	sendWait time.Duration
	backoff  [2]time.Duration
	logger   *slog.Logger
	tracer   trace.Tracer // nil: otel's global provider, looked up when a row is sent
	identity string       // the database's outbox identity, part of every producer name
	// retention: how long published rows are kept; purgeEvery: how often a lane's are purged.
	retention  time.Duration
	purgeEvery time.Duration
	// linger: how long after the start of a round that was not full a lane takes the next one.
	linger time.Duration
	// purging is held by the lane whose purge runs: one at a time per relay, so that the lanes' purges,
	// which start together, never take more than one of the pool's connections from the rounds.
	purging chan struct{}
	// bus: the seed's pulsar_* metrics, which the relay's sends count in too ([WithRelayMetrics]); nil: not.
	bus *Metrics

	backlog     prometheus.Gauge
	oldestAge   prometheus.Gauge
	published   prometheus.Counter
	errs        prometheus.Counter
	batchSplits prometheus.Counter
	purgedRows  prometheus.Counter
	rounds      prometheus.Counter
}

// RelayOption configures a [Relay].
type RelayOption interface{ apply(*Relay) }

type relayOptionFunc func(*Relay)

func (f relayOptionFunc) apply(r *Relay) { f(r) }

// WithRelayOwner names the relay instance in outbox_lanes (default: hostname-pid-random). Two running
// relays must never share an owner.
func WithRelayOwner(owner string) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.owner = owner })
}

// WithRelayMaxLanes caps how many lanes one relay holds at once (default: all of them), so that several
// instances split the lanes rather than the first taking everything.
func WithRelayMaxLanes(n int) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.maxLanes = n })
}

// WithRelayBatchSize sets how many rows of a lane are taken and sent per round (default 500).
func WithRelayBatchSize(n int) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.batch = n })
}

// WithRelayPollInterval sets how often a lane is scanned without a notification (default 1 s).
func WithRelayPollInterval(d time.Duration) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.poll = d })
}

// WithRelayLeaseTTL sets how long a lane lease lasts unless renewed (default 10 s); it is renewed every
// third of it. A killed relay's lanes are taken over after at most this long.
func WithRelayLeaseTTL(d time.Duration) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.ttl = d })
}

// WithRelayRegistry registers the relay's metrics (outbox_backlog, outbox_oldest_age_seconds,
// outbox_published_total, outbox_publish_errors_total, outbox_batch_splits_total, outbox_purged_total,
// outbox_rounds_total) in reg.
func WithRelayRegistry(reg prometheus.Registerer) RelayOption {
	return relayOptionFunc(func(r *Relay) {
		reg.MustRegister(r.backlog, r.oldestAge, r.published, r.errs, r.batchSplits, r.purgedRows, r.rounds)
	})
}

// WithRelayMetrics makes the relay record its sends in m, as a [Producer] does: pulsar_messages_sent_total
// (each message the broker acknowledged) and pulsar_publish_latency_seconds (from the send to the broker's
// answer, failures included), by topic. Most events reach the bus through the relay, so without it those
// series would leave them out.
func WithRelayMetrics(m *Metrics) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.bus = m })
}

// DefaultOutboxLinger is how long, by default, after the start of a round that was not full a lane takes
// the next one (OUTBOX_LINGER).
const DefaultOutboxLinger = 25 * time.Millisecond

// WithRelayLinger sets how long a lane waits, counted from the start of a round smaller than the batch
// size, before it takes the next round (default [DefaultOutboxLinger]; 0: not at all). The round statement
// costs PostgreSQL about as much for one row as for a hundred. When rows trickle in one or two at a
// time, waiting a little lets the next round gather the rows committed meanwhile, so the database runs
// fewer statements. A row committed while the lane is idle is never delayed by it: the lane takes its
// round as soon as it is woken, and waits only after a round it has sent. A full round (a backlog), or
// one that took the linger or longer, is followed by the next one at once.
func WithRelayLinger(d time.Duration) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.linger = max(d, 0) })
}

// DefaultOutboxRetention is how long published outbox rows are kept by default (OUTBOX_RETENTION).
const DefaultOutboxRetention = 24 * time.Hour

// WithRelayRetention sets how long published rows (and the lanes' marks of them) are kept before the
// relay deletes them (default [DefaultOutboxRetention]). A DirectoryRequest that an entry or claim still
// waits on is kept however old.
func WithRelayRetention(d time.Duration) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.retention = d })
}

// WithRelayPurgeInterval sets how often each lane's published rows older than the retention are deleted
// (default 1 min).
func WithRelayPurgeInterval(d time.Duration) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.purgeEvery = d })
}

// WithRelayLogger sets the relay's logger (default slog.Default()).
func WithRelayLogger(l *slog.Logger) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.logger = l })
}

// NewRelay returns a relay of the outbox in pool's database to client's broker. It does nothing until
// [Relay.Run].
func NewRelay(pool *pgxpool.Pool, client pulsar.Client, opts ...RelayOption) *Relay {
	host, _ := os.Hostname()
	r := &Relay{
		pool:       pool,
		client:     client,
		q:          sqlc.New(pool),
		owner:      fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8]),
		maxLanes:   1 << 15,
		batch:      500,
		poll:       time.Second,
		ttl:        10 * time.Second,
		sendWait:   30 * time.Second,
		retention:  DefaultOutboxRetention,
		purgeEvery: time.Minute,
		linger:     DefaultOutboxLinger,
		purging:    make(chan struct{}, 1),
		backoff:    [2]time.Duration{100 * time.Millisecond, 10 * time.Second},
		logger:     slog.Default(),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_backlog", Help: "Outbox rows not yet published.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_oldest_age_seconds", Help: "Age of the oldest unpublished outbox row.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_published_total", Help: "Outbox rows published and acknowledged by the broker.",
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_publish_errors_total", Help: "Failed outbox publish rounds.",
		}),
		batchSplits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_batch_splits_total", Help: "Messages the Pulsar client put outside the batch the relay cut for them (should stay 0).",
		}),
		purgedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_purged_total", Help: "Published outbox rows deleted after the retention.",
		}),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_rounds_total", Help: "Relay rounds sent (outbox_published_total divided by it: rows per round).",
		}),
	}
	for _, o := range opts {
		o.apply(r)
	}
	r.logger = r.logger.With("component", "outbox-relay", "owner", r.owner)
	return r
}

// Owner is the name the relay leases lanes under.
func (r *Relay) Owner() string { return r.owner }

// Run publishes until ctx is done, then stops its lanes (flushing and closing their producers), releases
// its leases and returns nil; it returns an error only when it cannot start.
func (r *Relay) Run(ctx context.Context) error {
	var lanes int
	if err := r.pool.QueryRow(ctx, "SELECT count(*) FROM outbox_lanes").Scan(&lanes); err != nil {
		return fmt.Errorf("outbox relay: read lanes: %w", err)
	}
	identity, err := r.q.OutboxIdentity(ctx)
	if err != nil {
		return fmt.Errorf("outbox relay: read the outbox identity: %w", err)
	}
	r.identity = identity.String()
	if lanes == 0 {
		return errors.New("outbox relay: outbox_lanes is empty; run the migrations")
	}
	wakes := make([]chan struct{}, lanes)
	for i := range wakes {
		wakes[i] = make(chan struct{}, 1)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wg.Add(2)
	go func() { defer wg.Done(); r.listen(ctx, wakes) }()
	go func() { defer wg.Done(); r.measure(ctx) }()

	type worker struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	workers := map[int16]worker{}
	stopAll := func() {
		for lane, w := range workers {
			w.cancel()
			<-w.done
			delete(workers, lane)
		}
	}
	defer func() {
		stopAll()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if err := r.q.ReleaseOutboxLanes(rctx, r.owner); err != nil {
			r.logger.Warn("release outbox lanes", "err", err)
		}
	}()

	renew := time.NewTicker(r.ttl / 3)
	defer renew.Stop()
	for {
		ttl := pgtype.Interval{Microseconds: r.ttl.Microseconds(), Valid: true}
		held, err := r.q.RenewOutboxLanes(ctx, sqlc.RenewOutboxLanesParams{Owner: r.owner, Ttl: ttl})
		if room := min(r.maxLanes, lanes) - len(held); err == nil && room > 0 {
			var claimed []int16
			claimed, err = r.q.ClaimOutboxLanes(ctx, sqlc.ClaimOutboxLanesParams{Owner: r.owner, Ttl: ttl, MaxLanes: int32(room)})
			held = append(held, claimed...)
		}
		if err != nil && ctx.Err() == nil {
			// Workers keep going: their writes are guarded by the lease, which lapses by itself.
			r.logger.Warn("claim outbox lanes", "err", err)
		} else if err == nil {
			keep := map[int16]bool{}
			for _, lane := range held {
				keep[lane] = true
				if _, ok := workers[lane]; !ok && int(lane) < lanes {
					wctx, wcancel := context.WithCancel(ctx)
					w := worker{cancel: wcancel, done: make(chan struct{})}
					workers[lane] = w
					go func() { defer close(w.done); r.runLane(wctx, lane, wakes[lane]) }()
				}
			}
			for lane, w := range workers {
				if !keep[lane] {
					r.logger.Info("outbox lane lost", "lane", lane)
					w.cancel()
					<-w.done
					delete(workers, lane)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
		}
	}
}

// listen turns notifications on channel "outbox" (payload: the lane) into wake-ups, reconnecting with
// backoff; polling covers whatever it misses.
func (r *Relay) listen(ctx context.Context, wakes []chan struct{}) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN outbox"); err == nil {
				attempt = 0
				for {
					n, werr := conn.WaitForNotification(ctx)
					if werr != nil {
						err = werr
						break
					}
					if lane, perr := strconv.Atoi(n.Payload); perr == nil && lane >= 0 && lane < len(wakes) {
						select {
						case wakes[lane] <- struct{}{}:
						default:
						}
					}
				}
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		if ctx.Err() != nil {
			return
		}
		r.logger.Warn("outbox listener", "err", err)
		sleepCtx(ctx, r.backoffFor(attempt))
	}
}

// measure keeps the backlog gauges current, to the second at most: counting the backlog reads every
// unpublished row, and a short poll interval (tests, benchmarks) should not make the relay count a large
// backlog several times a second while it drains it.
func (r *Relay) measure(ctx context.Context) {
	t := time.NewTicker(max(r.poll, time.Second))
	defer t.Stop()
	for {
		if b, err := r.q.OutboxBacklog(ctx); err == nil {
			r.backlog.Set(float64(b.Rows))
			r.oldestAge.Set(b.OldestAgeSeconds)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errLeaseLost means the relay no longer holds the lane it was working on.
var errLeaseLost = errors.New("outbox lane lease lost")

// runLane publishes one lane until ctx is done: drain, then wait for a wake-up or the poll interval.
func (r *Relay) runLane(ctx context.Context, lane int16, wake <-chan struct{}) {
	l := &laneState{relay: r, lane: lane, producers: map[string]pulsar.Producer{}}
	// The lane's purge runs beside its rounds, not between them: deleting a minute's published rows
	// (or waiting on a lock one of them is under) must not hold up the rows waiting to be sent.
	purged := make(chan struct{})
	go func() { defer close(purged); l.purgeLoop(ctx) }()
	defer func() { <-purged }() // runLane returns once ctx is done, which stops the purge too
	defer l.closeProducers()
	defer func() {
		if err := l.flushMark(ctx); err != nil && !errors.Is(err, errLeaseLost) {
			r.logger.Warn("mark outbox lane published", "lane", lane, "err", err)
		}
	}()
	poll := time.NewTicker(r.poll)
	defer poll.Stop()
	failures := 0
	for ctx.Err() == nil {
		err := l.drain(ctx, wake)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errLeaseLost):
			// The lease loop will notice too and stop this worker; until then, only poll.
			failures = 0
		case err != nil:
			r.errs.Inc()
			r.logger.Warn("outbox lane publish failed", "lane", lane, "err", err, "failures", failures+1)
			sleepCtx(ctx, r.backoffFor(failures))
			failures++
			continue
		default:
			failures = 0
		}
		// The poll counts from the lane's last round: a tick that fell during the drain would only make
		// an empty round (Reset drops it, Go 1.23 timers).
		poll.Reset(r.poll)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-poll.C:
		}
	}
}

// outboxRow is one row of a round, with its Pulsar sequence id (LaneSeq) and its batch's (LaneBatch),
// given by numberRound.
type outboxRow struct {
	sqlc.OutboxRoundRow
	LaneSeq, LaneBatch int64
}

// numberRound gives each row of a round (in seq order) its Pulsar sequence id, next + its position in
// the round, and its batch's: per topic, runs of at most maxBatch rows, each named by the sequence id of
// its first row. A round sent again (the same rows from the same next) is numbered and cut alike, which
// the broker's deduplication relies on.
func numberRound(rows []outboxRow, next int64, maxBatch int) {
	type run struct {
		n     int
		first int64
	}
	runs := map[string]*run{}
	for i := range rows {
		r := &rows[i]
		r.LaneSeq = next + int64(i)
		t := runs[r.Topic]
		if t == nil {
			t = &run{}
			runs[r.Topic] = t
		}
		if t.n%maxBatch == 0 {
			t.first = r.LaneSeq
		}
		t.n++
		r.LaneBatch = t.first
	}
}

// laneState is one lane's worker: its producers, one per topic, and what it knows of the lane's rows.
type laneState struct {
	relay     *Relay
	lane      int16
	producers map[string]pulsar.Producer
	// mark: the last round, sent and acknowledged in full, still to be marked published (by the next
	// round's statement, or flushMark).
	mark roundID
}

// roundID names a lane's round: its batch and its last row's seq (0: none).
type roundID struct{ batch, seq int64 }

func (id roundID) empty() bool { return id.seq == 0 }

// A batch is one Pulsar entry: at most maxBatchMessages rows of one topic, cut when the round is taken
// (numberRound). Outbox payloads are at most 32 KiB (a CHECK in the schema), so a full batch stays well
// under the producer's BatchingMaxSize and the client never splits one.
const (
	maxBatchMessages   = 100
	producerBatchBytes = 4 << 20
)

// drain publishes the lane's rows until none are left, round after round. A round is one statement
// and the sends: the statement marks the previous round published (all of it was acknowledged) and
// returns the next one, recorded in the lane as in flight before it is sent; it writes no outbox row,
// and a round costs one round trip to the database. A round that fails stays in flight: the next
// statement returns it again, the same rows under the same sequence ids in the same batches, and the
// broker drops the batches it already stored. After a round that was not full the lane lingers
// ([WithRelayLinger]) so that the next one gathers what was committed meanwhile.
//
// A wake-up that arrives before a round's statement is spent by it: the notification is sent after
// its transaction committed, so the round sees that row. Only a wake-up during or after the last
// (empty) round makes the lane take another; without this, the wake-ups of the rows a round already
// took would each cost an empty round once the lane is idle.
func (l *laneState) drain(ctx context.Context, wake <-chan struct{}) error {
	for {
		select {
		case <-wake:
		default:
		}
		started := time.Now()
		rows, id, err := l.round(ctx, l.relay.batch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		if err := l.publish(ctx, rows); err != nil {
			return err
		}
		l.mark = id
		l.relay.rounds.Inc()
		if d := lingerAfter(l.relay.linger, time.Since(started), len(rows), l.relay.batch); d > 0 {
			sleepCtx(ctx, d)
		}
	}
}

// lingerAfter is how long a lane waits before its next round, after a round of n rows (of at most batch)
// that lasted took, from the start of its statement to the broker's last receipt. A full round is followed
// at once (a backlog). Otherwise the linger counts from the round's start, not its end: a round that
// took long (a busy database or broker) has gathered the rows committed meanwhile, and the whole linger
// on top of it would only add to their latency when the machine is loaded; a lane still takes at most
// one round per linger while rows trickle in.
func lingerAfter(linger, took time.Duration, n, batch int) time.Duration {
	if n >= batch || took >= linger {
		return 0
	}
	return linger - took
}

// round runs the lane's round statement: it marks l.mark published and returns the lane's round (the
// one in flight, or up to maxRows new rows), in sequence id order, and its id. It returns errLeaseLost
// when the lease is gone.
func (l *laneState) round(ctx context.Context, maxRows int) ([]outboxRow, roundID, error) {
	r := l.relay
	res, err := r.q.OutboxRound(ctx, sqlc.OutboxRoundParams{
		Lane: l.lane, Owner: r.owner, MarkBatch: l.mark.batch, MarkSeq: l.mark.seq, MaxRows: int32(maxRows),
	})
	if err != nil {
		return nil, roundID{}, fmt.Errorf("outbox lane %d round: %w", l.lane, err)
	}
	if len(res) == 0 || !res[0].Leased {
		// Nothing was marked: whoever holds the lane next re-sends that round, which the broker drops.
		l.mark = roundID{}
		return nil, roundID{}, errLeaseLost
	}
	if !l.mark.empty() {
		r.published.Add(float64(res[0].Marked))
		l.mark = roundID{}
	}
	rows := make([]outboxRow, 0, len(res))
	for _, row := range res {
		if row.Seq != 0 { // else the row of the counts alone: nothing to send
			rows = append(rows, outboxRow{OutboxRoundRow: row})
		}
	}
	slices.SortFunc(rows, func(a, b outboxRow) int { return cmp.Compare(a.Seq, b.Seq) })
	numberRound(rows, res[0].NextSeq, maxBatchMessages)
	return rows, roundID{batch: res[0].BatchNo, seq: res[0].RoundSeq}, nil
}

// flushMark marks l.mark published now, taking no new round: when the worker stops. It goes on after
// ctx is done, briefly: a mark lost only makes the lane's next holder re-send rows the broker drops.
func (l *laneState) flushMark(ctx context.Context) error {
	if l.mark.empty() {
		return nil
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _, err := l.round(mctx, 0)
	return err
}

// purgeBatch bounds the rows one purge statement deletes.
const purgeBatch = 1000

// purgeLoop purges the lane's published rows when the lane starts and then once per purge interval,
// until ctx is done.
func (l *laneState) purgeLoop(ctx context.Context) {
	t := time.NewTicker(l.relay.purgeEvery)
	defer t.Stop()
	for {
		l.purge(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// purge deletes the lane's rows published longer than the retention ago, in statements of at most
// purgeBatch rows, once no other lane of the relay is purging. A failure is logged and left to the next
// interval. It writes nothing the lane's rounds read or write (published rows, and marks older than the
// last one it keeps), so it runs beside them.
func (l *laneState) purge(ctx context.Context) {
	r := l.relay
	select {
	case r.purging <- struct{}{}:
		defer func() { <-r.purging }()
	case <-ctx.Done():
		return
	}
	for ctx.Err() == nil {
		n, err := r.q.PurgeOutbox(ctx, sqlc.PurgeOutboxParams{
			Lane: l.lane, Before: time.Now().Add(-r.retention), MaxRows: purgeBatch,
		})
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("purge outbox lane", "lane", l.lane, "err", err)
			}
			return
		}
		r.purgedRows.Add(float64(n))
		if n < purgeBatch {
			return
		}
	}
}

// publish sends rows (a round, in sequence id order), batch by batch as they were cut, and returns nil
// when the broker acknowledged every one; the caller then marks the round (with its next statement).
// Otherwise it records the failure on the rows not acknowledged and returns the error: the round stays
// in flight and is sent again whole. A batch's rows go out with SendAsync except the last, which is sent
// with Send: that flushes the producer's batch at exactly the batch's bound and waits for the broker's
// receipt. After any failure the topic's producer is closed (unless the broker merely did not answer in
// time, see keepProducer), which fails whatever it still holds, so the broker has stored a prefix of the
// batches sent and the re-send of the round is neither dropped wrongly nor doubled.
func (l *laneState) publish(ctx context.Context, rows []outboxRow) error {
	byTopic := map[string][]int{}
	var topics []string
	for i, row := range rows {
		if _, ok := byTopic[row.Topic]; !ok {
			topics = append(topics, row.Topic)
		}
		byTopic[row.Topic] = append(byTopic[row.Topic], i)
	}
	var firstErr error
	for _, topic := range topics {
		idx := byTopic[topic]
		p, err := l.producer(topic)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			l.recordFailure(ctx, rows, idx, err)
			continue
		}
		n, err := l.sendBatches(ctx, p, rows, idx)
		if err != nil {
			if !keepProducer(ctx, err) {
				l.dropProducer(topic)
			}
			err = fmt.Errorf("publish to %s (lane %d, sequence %d): %w", topic, l.lane, rows[idx[n]].LaneSeq, err)
			firstErr = cmpErr(firstErr, err)
			l.recordFailure(ctx, rows, idx[n:], err)
		}
	}
	return firstErr
}

// sendBatches sends the rows idx (one topic's, in order) through p batch by batch and returns how many
// of them, a prefix of whole batches, the broker acknowledged, with the error that stopped it. On an
// error the caller must close p before sending again: it may still hold messages.
//
// The producer's batch container holds exactly maxBatchMessages, so a full batch is flushed, whole, by
// the first message of the next one and the full batches are pipelined. A batch that is not full, or
// is the last one sent, ends with a blocking Send, which flushes at exactly its bound and waits for the
// receipts of everything sent before it.
func (l *laneState) sendBatches(ctx context.Context, p pulsar.Producer, rows []outboxRow, idx []int) (int, error) {
	r := l.relay
	type result struct {
		done bool
		err  error
	}
	var mu sync.Mutex // results is written by the client's callbacks
	results := make([]result, len(idx))
	var wg sync.WaitGroup
	// acked waits (bounded: a closed producer should fail what it holds, but the lane must never hang on
	// it) and returns the acknowledged prefix of idx[:upto], rounded down to a batch boundary: a batch is
	// one entry, stored whole or not at all, and a part of one marked would have the rest re-sent under
	// a later first id, which deduplication would not recognise.
	acked := func(upto int) (int, error) {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		t := time.NewTimer(r.sendWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
		mu.Lock()
		defer mu.Unlock()
		n, err := upto, error(nil)
		for k := range upto {
			if !results[k].done {
				n, err = k, errors.New("broker did not acknowledge in time")
				break
			}
			if results[k].err != nil {
				n, err = k, results[k].err
				break
			}
		}
		for n > 0 && n < len(idx) && rows[idx[n]].LaneBatch == rows[idx[n-1]].LaneBatch {
			n--
		}
		return n, err
	}
	record := l.sendRecorder(rows[idx[0]].Topic)
	for start := 0; start < len(idx); {
		end := start + 1
		for end < len(idx) && rows[idx[end]].LaneBatch == rows[idx[start]].LaneBatch {
			end++
		}
		// first, not start: the callbacks below run after start has moved on to the next batch.
		first, size := start, end-start
		pipelined := size == maxBatchMessages && end < len(idx)
		for k := first; k < end; k++ {
			i := idx[k]
			msg, span := l.message(ctx, rows[i])
			sent := time.Now()
			if k == end-1 && !pipelined {
				sctx, cancel := context.WithTimeout(ctx, r.sendWait)
				id, err := p.Send(sctx, msg)
				cancel()
				record(sent, err)
				endPublishSpan(span, id, err)
				mu.Lock()
				results[k] = result{done: true, err: err}
				mu.Unlock()
				if err != nil {
					if !keepProducer(ctx, err) {
						// Close fails what p still holds, so the callbacks run.
						l.dropProducer(rows[i].Topic)
					}
					return acked(end)
				}
				l.checkBatch(id, nil, k-first, size, rows[i].LaneBatch)
				continue
			}
			wg.Add(1)
			p.SendAsync(ctx, msg, func(id pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
				record(sent, err)
				endPublishSpan(span, id, err)
				mu.Lock()
				results[k] = result{done: true, err: err}
				mu.Unlock()
				l.checkBatch(id, err, k-first, size, rows[i].LaneBatch)
				wg.Done()
			})
		}
		start = end
	}
	return acked(len(idx))
}

// keepProducer tells whether a failed send leaves the producer in use: when the broker simply did not
// answer within the send wait (it is away), the producer keeps what it holds and its own reconnect
// re-sends it in order, and the lane's next round re-sends the same batches behind them, which the
// broker's deduplication drops. Closing it instead can leave, in pulsar-client-go v0.19.0, a producer
// that its reconnect registers again under the lane's fixed name after Close returned, so the
// broker refuses the successor with ProducerBusy for as long as the connection lives.
func keepProducer(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded)
}

// message is the Pulsar message of an outbox row: its payload and key, its lane sequence number as the
// sequence id, and the event's identity and trace context as properties; with it, the row's publish span
// (a child of the request that wrote the row), which the caller ends when the broker answers.
func (l *laneState) message(ctx context.Context, row outboxRow) (*pulsar.ProducerMessage, trace.Span) {
	seq := row.LaneSeq
	id := row.ID.String()
	props := map[string]string{
		"event_id":       id,
		"event_type":     row.EventType,
		"aggregate_type": row.AggregateType,
		"aggregate_id":   row.AggregateID,
		"participant":    row.Participant,
		"content_type":   row.ContentType,
	}
	span := l.relay.tracePublish(ctx, row.Traceparent.String, row.Topic, id, props)
	return &pulsar.ProducerMessage{
		Payload: row.Payload, Key: row.PartitionKey, Properties: props,
		SequenceID: &seq, EventTime: row.CreatedAt,
	}, span
}

// sendRecorder returns the function that records one send to topic in the relay's pulsar_* metrics, as a
// [Producer] does (a no-op without [WithRelayMetrics]).
func (l *laneState) sendRecorder(topic string) func(sent time.Time, err error) {
	m := l.relay.bus
	if m == nil {
		return func(time.Time, error) {}
	}
	topic = baseTopic(topic)
	return func(sent time.Time, err error) { m.recordSend(topic, sent, err) }
}

// checkBatch reports a message that the client did not put in the batch it was cut for: the broker's
// deduplication of a re-send would then be wrong. It should never happen; the log makes it visible.
func (l *laneState) checkBatch(id pulsar.MessageID, err error, k, size int, batch int64) {
	if err != nil || id == nil || id.LedgerID() < 0 || id.BatchSize() == 0 {
		return // failed, or a duplicate the broker dropped (no position)
	}
	if int(id.BatchIdx()) != k || int(id.BatchSize()) != size {
		l.relay.batchSplits.Inc()
		l.relay.logger.Error("outbox batch split by the client", "lane", l.lane, "batch", batch,
			"index", k, "size", size, "got_index", id.BatchIdx(), "got_size", id.BatchSize())
	}
}

func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}

func (l *laneState) recordFailure(ctx context.Context, rows []outboxRow, idx []int, err error) {
	ids := make([]uuid.UUID, len(idx))
	for k, i := range idx {
		ids[k] = rows[i].ID
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if ferr := l.relay.q.RecordOutboxFailure(fctx, sqlc.RecordOutboxFailureParams{Ids: ids, LastError: err.Error()}); ferr != nil {
		l.relay.logger.Warn("record outbox failure", "lane", l.lane, "err", ferr)
	}
}

// ProducerName is the fixed name of the relay's producer for the outbox of the database whose outbox
// identity is identity (table outbox_identity), topic and lane: the key of the broker's deduplication.
// Every relay instance that ever publishes the lane uses it; another database's relays never do.
func ProducerName(identity, topic string, lane int) string {
	h := fnv.New64a()
	h.Write([]byte(identity))
	h.Write([]byte{0})
	h.Write([]byte(topic))
	return fmt.Sprintf("core-dict-outbox-%016x-lane-%d", h.Sum64(), lane)
}

func (l *laneState) producer(topic string) (pulsar.Producer, error) {
	if p, ok := l.producers[topic]; ok {
		return p, nil
	}
	p, err := l.relay.client.CreateProducer(pulsar.ProducerOptions{
		Topic: topic,
		Name:  ProducerName(l.relay.identity, topic, int(l.lane)),
		// No send timeout: the client never fails one message while a later one may still be
		// stored, so what the broker holds is always a prefix of what was sent.
		SendTimeout:     -1,
		CompressionType: pulsar.LZ4,
		// Batches are cut by the relay (OutboxRound) and flushed by it (sendBatches), never by the
		// client: the broker deduplicates a batch by its first sequence id as a whole, so a successor
		// re-sending the rows must send the very same batches. Hence room for exactly a full batch
		// (sendBatches relies on it) and no timer flush in between.
		BatchingMaxMessages:     maxBatchMessages,
		BatchingMaxSize:         producerBatchBytes,
		BatchingMaxPublishDelay: 24 * time.Hour,
		MaxPendingMessages:      max(1000, 2*l.relay.batch),
	})
	if err != nil {
		return nil, fmt.Errorf("create producer for %s (lane %d): %w", topic, l.lane, err)
	}
	l.producers[topic] = p
	return p, nil
}

func (l *laneState) dropProducer(topic string) {
	if p, ok := l.producers[topic]; ok {
		p.Close()
		delete(l.producers, topic)
	}
}

func (l *laneState) closeProducers() {
	for topic, p := range l.producers {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.FlushWithCtx(fctx)
		cancel()
		p.Close()
		delete(l.producers, topic)
	}
}

func (r *Relay) backoffFor(attempt int) time.Duration {
	d := r.backoff[0] << min(attempt, 20)
	if d > r.backoff[1] || d <= 0 {
		d = r.backoff[1]
	}
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
