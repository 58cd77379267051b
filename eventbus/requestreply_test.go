package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/eventbus"
)

// TestRequesterRoutesRepliesByCorrelation runs a responder on the request
// topic that answers every request but one on the requester's reply topic,
// out of order: each concurrent request gets its own reply, the unanswered
// one ends with ErrNoReply at its deadline, and the metrics count both.
func TestRequesterRoutesRepliesByCorrelation(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	reqTopic, replyTopic := testTopic(t, "rr-req"), testTopic(t, "rr-reply")

	// The reply's payload is "reply:<correlation id>"; the correlation id
	// travels as the request's event id.
	correlate := func(payload []byte, _ map[string]string) (string, error) {
		var id string
		if _, err := fmt.Sscanf(string(payload), "reply:%s", &id); err != nil {
			return "", err
		}
		return id, nil
	}
	reg := prometheus.NewRegistry()
	r, err := client.NewRequester(reqTopic, replyTopic, correlate, eventbus.WithRequesterRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { stop(); <-done; r.Close() }()

	responder, err := client.NewConsumer([]string{reqTopic}, eventbus.WithSubscription("responder", pulsar.Shared), eventbus.WithWorkers(4))
	if err != nil {
		t.Fatal(err)
	}
	replies, err := client.NewProducer(r.ReplyTo())
	if err != nil {
		t.Fatal(err)
	}
	defer replies.Close()
	responder.Register("Ask", func(ctx context.Context, d eventbus.Delivery) error {
		if d.EventID == "silent" {
			return nil
		}
		// A stray reply first: nobody waits for it.
		if _, err := replies.Publish(ctx, eventbus.Message{Payload: []byte("reply:nobody-" + d.EventID)}); err != nil {
			return err
		}
		_, err := replies.Publish(ctx, eventbus.Message{Payload: []byte("reply:" + d.EventID)})
		return err
	})
	run(t, responder)

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("req-%d", i)
			// Bounded by the test's context only: a broker under load (the
			// package's outage test runs a second one) may take a while.
			got, err := r.Request(ctx, id, eventbus.Message{Key: id, EventID: id, EventType: "Ask", Payload: []byte(id)})
			if err != nil {
				t.Errorf("request %s: %v", id, err)
				return
			}
			if string(got) != "reply:"+id {
				t.Errorf("request %s got %q", id, got)
			}
		}()
	}
	wg.Wait()

	sc, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = r.Request(sc, "silent", eventbus.Message{Key: "k", EventID: "silent", EventType: "Ask"})
	if !errors.Is(err, eventbus.ErrNoReply) {
		t.Errorf("unanswered request: err %v, want ErrNoReply", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "request_reply_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["replied"] != 20 || got["timeout"] != 1 {
		t.Errorf("request_reply_requests_total = %v, want 20 replied and 1 timeout", got)
	}
}
