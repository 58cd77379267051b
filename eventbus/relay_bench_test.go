package eventbus_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lbpay-lab/core-dict/eventbus"
)

// BenchmarkOutbox compares the outbox path (commit a row, the relay publishes it) with a producer
// publishing the same events directly, in one run:
//
//	go test -run '^$' -bench 'BenchmarkOutbox$' -benchtime 100000x ./eventbus/
//
// (100,000 events: at 20,000 the direct path's run is over in 0.15-0.4 s and swings by 3x between runs.)
// Both paths are warmed up first (1,000 events: topic, producers and, for the relay, its lanes), then:
// events/s is b.N events end to end (relay: b.N rows committed in one transaction, from before the
// commit until the consumer has them all; direct: b.N async sends until the consumer has them all);
// drain_events/s is the same events from the commit on (relay: from the INSERT's commit until the
// consumer has them all, the relay's work alone; direct: the same as events/s, nothing precedes it);
// p50_ms/p99_ms is the commit-to-consumer (direct: send-to-consumer) latency at a paced 2,000 events/s
// over 3 s, each event its own transaction as in dict; paced_events/s is the rate that phase reached
// (a run that cannot keep up falls below 2,000), paced_go_cpu_ms and paced_db_cpu_ms are its CPU.
// allocs/event (and paced_allocs/event) are this process's heap allocations per event. After both, a
// line gives the relay's throughput as a ratio of the direct path's, from the commit (the relay's own
// work) and end to end (the INSERT of the rows included).
//
// The relay runs with its defaults (linger [eventbus.DefaultOutboxLinger]) unless BENCH_RELAY_LINGER
// (a duration, 0 for none) or BENCH_RELAY_BATCH say otherwise.
func BenchmarkOutbox(b *testing.B) {
	var relayRate, relayDrain, directRate float64
	defer func() {
		if relayRate > 0 && directRate > 0 {
			// Printed, not logged: a benchmark with sub-benchmarks reports nothing itself, and its log is dropped.
			fmt.Printf("BenchmarkOutbox: relay ÷ direct: from the commit %.2f, end to end %.2f\n", relayDrain/directRate, relayRate/directRate)
		}
	}()
	b.Run("relay", func(b *testing.B) {
		opts := []eventbus.RelayOption{eventbus.WithRelayBatchSize(envInt("BENCH_RELAY_BATCH", 500))}
		if v := os.Getenv("BENCH_RELAY_LINGER"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("BENCH_RELAY_LINGER=%q: %v", v, err)
			}
			opts = append(opts, eventbus.WithRelayLinger(d))
		}
		db := relayDB(b)
		client := benchClient(b)
		topic := benchTopic(b)
		recv := benchConsumer(b, client, topic)
		startRelay(b, db.Pool, client, opts...)
		benchInsert(b, db.Pool, topic, 1000, 0, 10)
		recv.wait(b, 1000, time.Minute)
		// Throughput: b.N rows committed at once, drained.
		cpu := startCPU(b, db.Pool)
		b.ResetTimer()
		start := time.Now()
		if _, err := db.Pool.Exec(context.Background(), `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
			SELECT gen_random_uuid(), now(), $1, 'key-' || (g % 1000), 'KeyUpdated', 'Entry', 'key-' || (g % 1000), '12345678', 'application/octet-stream', $2
			FROM generate_series(1, $3::int) g`, topic, benchPayload(0), b.N); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		recv.wait(b, 1000+b.N, 2*time.Minute)
		done := time.Now()
		b.StopTimer()
		cpu.report(b, b.N)
		// Latency: paced single-row commits.
		paced := startCPU(b, db.Pool)
		b.ReportMetric(benchInsert(b, db.Pool, topic, pacedEvents, pacedRate, 1), "paced_events/s")
		recv.wait(b, 1000+b.N+pacedEvents, time.Minute)
		paced.reportAs(b, "paced_", pacedEvents)
		relayRate, relayDrain = report(b, done.Sub(start), done.Sub(committed), recv)
	})
	b.Run("direct", func(b *testing.B) {
		client := benchClient(b)
		topic := benchTopic(b)
		recv := benchConsumer(b, client, topic)
		p, err := client.CreateProducer(pulsar.ProducerOptions{
			Topic: topic, CompressionType: pulsar.LZ4,
			BatchingMaxMessages: 100, BatchingMaxPublishDelay: 10 * time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchSend(b, p, 1000, 0)
		recv.wait(b, 1000, time.Minute)
		cpu := startCPU(b, nil)
		b.ResetTimer()
		start := time.Now()
		benchSend(b, p, b.N, 0)
		recv.wait(b, 1000+b.N, 2*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		cpu.report(b, b.N)
		paced := startCPU(b, nil)
		b.ReportMetric(benchSend(b, p, pacedEvents, pacedRate), "paced_events/s")
		recv.wait(b, 1000+b.N+pacedEvents, time.Minute)
		paced.reportAs(b, "paced_", pacedEvents)
		directRate, _ = report(b, elapsed, elapsed, recv)
	})
}

// The paced phase: pacedEvents events at pacedRate a second (the goal's 2,000/s, over 3 s).
const pacedEvents, pacedRate = 6000, 2000

// cpuMeter measures the CPU time the throughput phase costs, which a loaded machine disturbs far less
// than its wall time: this process's (relay or producer, and the consumer) as go_cpu_ms, and the
// PostgreSQL backends of the test database's pool (inserts and relay) as db_cpu_ms. The broker's is
// not measured (it serves other tests too). allocs/event, this process's heap allocations per event,
// does not depend on the machine's load at all.
type cpuMeter struct {
	pool     *pgxpool.Pool
	goAt     time.Duration
	dbAt     map[int]time.Duration
	mallocAt uint64
}

func startCPU(b *testing.B, pool *pgxpool.Pool) *cpuMeter {
	m := &cpuMeter{pool: pool, goAt: processCPU(), mallocAt: mallocs()}
	m.dbAt = m.backendsCPU(b)
	return m
}

func (m *cpuMeter) report(b *testing.B, events int) { m.reportAs(b, "", events) }

// reportAs reports the CPU time and allocations of the events since startCPU, its metrics' names
// prefixed with prefix.
func (m *cpuMeter) reportAs(b *testing.B, prefix string, events int) {
	b.ReportMetric(float64(mallocs()-m.mallocAt)/float64(events), prefix+"allocs/event")
	b.ReportMetric(float64((processCPU() - m.goAt).Milliseconds()), prefix+"go_cpu_ms")
	if m.pool == nil {
		return
	}
	var db time.Duration
	for pid, t := range m.backendsCPU(b) {
		db += t - m.dbAt[pid]
	}
	b.ReportMetric(float64(db.Milliseconds()), prefix+"db_cpu_ms")
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendsCPU reads the user+system time of the database's backends from /proc (the server is local).
func (m *cpuMeter) backendsCPU(b *testing.B) map[int]time.Duration {
	out := map[int]time.Duration{}
	if m.pool == nil {
		return out
	}
	rows, err := m.pool.Query(context.Background(), "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[int(pid)] = time.Duration(ut+st) * (time.Second / 100) // USER_HZ
	}
	return out
}

// report reports the throughput of b.N events over elapsed (end to end) and drain (from the commit on),
// and the paced phase's latency; it returns the two throughputs.
func report(b *testing.B, elapsed, drain time.Duration, recv *benchReceiver) (rate, drainRate float64) {
	rate, drainRate = float64(b.N)/elapsed.Seconds(), float64(b.N)/drain.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(drainRate, "drain_events/s")
	recv.mu.Lock()
	lat := slices.Clone(recv.lat)
	recv.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
	b.ReportMetric(0, "ns/op")
	return rate, drainRate
}

func benchClient(b *testing.B) pulsar.Client {
	c, err := pulsar.NewClient(pulsar.ClientOptions{URL: pulsarURL()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

func benchTopic(b *testing.B) string {
	return fmt.Sprintf("persistent://%s/relay-bench-%s", eventsNamespace, uuid.NewString()[:12])
}

// benchReceiver counts messages and, for the paced phase, records latency from the send/commit time
// carried in the payload's first 8 bytes (0: not measured).
type benchReceiver struct {
	mu  sync.Mutex
	n   int
	lat []time.Duration
}

func benchConsumer(b *testing.B, client pulsar.Client, topic string) *benchReceiver {
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic: topic, SubscriptionName: "bench", Type: pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
		ReceiverQueueSize:           2000,
	})
	if err != nil {
		b.Fatal(err)
	}
	r := &benchReceiver{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := consumer.Receive(ctx)
			if err != nil {
				return
			}
			consumer.AckID(msg.ID())
			now := time.Now()
			r.mu.Lock()
			r.n++
			if p := msg.Payload(); len(p) >= 8 {
				if t := int64(binary.BigEndian.Uint64(p)); t != 0 {
					r.lat = append(r.lat, now.Sub(time.Unix(0, t)))
				}
			}
			r.mu.Unlock()
		}
	}()
	b.Cleanup(func() { cancel(); <-done; consumer.Close() })
	return r
}

func (r *benchReceiver) wait(b *testing.B, n int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		got := r.n
		r.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("received fewer than %d messages in %s", n, timeout)
}

func benchPayload(at int64) []byte {
	p := make([]byte, 200)
	binary.BigEndian.PutUint64(p, uint64(at))
	return p
}

// benchInsert commits n outbox rows over 1,000 keys, perTx rows per transaction; with rate > 0 it paces
// them at rate rows/s and stamps each with the time of its INSERT, in a
// transaction of one row that commits right after. It returns the rate it reached (rows/s).
func benchInsert(b *testing.B, pool *pgxpool.Pool, topic string, n, rate, perTx int) float64 {
	ctx := context.Background()
	const workers = 16
	var wg sync.WaitGroup
	ticks := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ticks {
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					for j := i; j < min(n, i+perTx); j++ {
						at := int64(0)
						if rate > 0 {
							at = time.Now().UnixNano()
						}
						if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
							VALUES ($1, now(), $2, $3, 'KeyUpdated', 'Entry', $3, '12345678', 'application/octet-stream', $4)`,
							uuid.New(), topic, fmt.Sprintf("key-%d", j%1000), benchPayload(at)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Error(err)
				}
			}
		}()
	}
	pace := newPacer(rate)
	for i := 0; i < n; i += perTx {
		pace.wait(i)
		ticks <- i
	}
	close(ticks)
	wg.Wait()
	return pace.rate(n)
}

// benchSend publishes n events directly, paced at rate/s when rate > 0 (stamped with the send time), with
// the key, event time and properties the relay gives the same rows. It returns the rate it reached.
func benchSend(b *testing.B, p pulsar.Producer, n, rate int) float64 {
	pace := newPacer(rate)
	for i := range n {
		at := int64(0)
		if rate > 0 {
			pace.wait(i)
			at = time.Now().UnixNano()
		}
		key := fmt.Sprintf("key-%d", i%1000)
		p.SendAsync(context.Background(), &pulsar.ProducerMessage{
			Payload: benchPayload(at), Key: key, EventTime: time.Now(),
			// The properties the relay sends for the benchmark's rows (relay.go message): the same events.
			Properties: map[string]string{
				"event_id": uuid.NewString(), "event_type": "KeyUpdated", "aggregate_type": "Entry",
				"aggregate_id": key, "participant": "12345678", "content_type": "application/octet-stream",
			},
		}, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := p.Flush(); err != nil {
		b.Fatal(err)
	}
	return pace.rate(n)
}

// pacer spaces events at a rate per second on average: the i-th is due at start + i/rate, and one that
// is late (the machine was busy) goes at once, so the run catches up. A time.Ticker drops the ticks its
// reader is late for: on a loaded machine, a run meant for 2,000/s went at about 1,450/s with it.
type pacer struct {
	start  time.Time
	period time.Duration
}

// newPacer returns a pacer for rate events/s; with rate 0 it does not wait.
func newPacer(rate int) *pacer {
	if rate <= 0 {
		return &pacer{start: time.Now()}
	}
	return &pacer{start: time.Now(), period: time.Second / time.Duration(rate)}
}

// wait returns when event i is due.
func (p *pacer) wait(i int) {
	if d := time.Until(p.start.Add(time.Duration(i) * p.period)); d > 0 {
		time.Sleep(d)
	}
}

// rate is the rate n events since the pacer's start were sent at.
func (p *pacer) rate(n int) float64 { return float64(n) / time.Since(p.start).Seconds() }

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkOutboxCatchUp drains a backlog that is one batch of one lane, as after a broker outage: the
// rows of one key are committed (1,000 per transaction) while no relay runs, then a relay starts and
// the benchmark waits for the consumer to have them all. Sub-benchmarks of 10,000 and 100,000 rows: when
// a round's cost does not grow with what is left of the batch, both drain at about the same rate.
//
//	go test -run '^$' -bench BenchmarkOutboxCatchUp -benchtime 1x ./eventbus/
func BenchmarkOutboxCatchUp(b *testing.B) {
	for _, rows := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			for range b.N {
				db := relayDB(b)
				client := benchClient(b)
				topic := benchTopic(b)
				recv := benchConsumer(b, client, topic)
				ctx := context.Background()
				for start := 0; start < rows; start += 1000 {
					if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
						SELECT gen_random_uuid(), now(), $1, 'catch-up-key', 'KeyUpdated', 'Entry', 'catch-up-key', '12345678', 'application/octet-stream', $2
						FROM generate_series(1, $3::int)`, topic, benchPayload(0), min(1000, rows-start)); err != nil {
						b.Fatal(err)
					}
				}
				cpu := startCPU(b, db.Pool)
				start := time.Now()
				stop := startRelay(b, db.Pool, client)
				recv.wait(b, rows, 5*time.Minute)
				elapsed := time.Since(start)
				cpu.report(b, rows)
				stop()
				b.ReportMetric(float64(rows)/elapsed.Seconds(), "events/s")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}
