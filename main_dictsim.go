package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lbpay-lab/core-dict/dictsim"
)

// runDictsim runs the simulated central directory (BCB's DICT) behind the
// RSFN topics: `core-dict dictsim [-migrate]`. Settings: DICTSIM_DATABASE_URL,
// PULSAR_URL, PULSAR_TOPIC_DICT_REQ_OUT, DICTSIM_PARTICIPANT_CATEGORY,
// DICTSIM_NOTICE_TOPICS, DICTSIM_METRICS_PORT (default 9092), LOG_LEVEL.
func runDictsim(args []string) error {
	fs := flag.NewFlagSet("dictsim", flag.ContinueOnError)
	migrate := fs.Bool("migrate", true, "apply the simulator's migrations before consuming")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := dictsim.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("LOG_LEVEL"))); err != nil && os.Getenv("LOG_LEVEL") != "" {
		return errors.New("LOG_LEVEL: want debug, info, warn or error")
	}
	port := 9092
	if v := os.Getenv("DICTSIM_METRICS_PORT"); v != "" {
		if port, err = strconv.Atoi(v); err != nil || port < 1 || port > 65535 {
			return fmt.Errorf("DICTSIM_METRICS_PORT=%q: want a port from 1 to 65535", v)
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Logger, cfg.Registerer = logger, reg

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	shutdownTracing, err := setupTracing(ctx, "dictsim", logger)
	if err != nil {
		return err
	}
	defer shutdownTracing()
	if *migrate {
		if err := dictsim.Migrate(ctx, cfg.DatabaseURL, os.Stderr); err != nil {
			return fmt.Errorf("DICTSIM_DATABASE_URL: %w", err)
		}
	}
	sim, err := dictsim.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer sim.Close()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ops := &http.Server{Addr: net.JoinHostPort(os.Getenv("LISTEN_HOST"), strconv.Itoa(port)), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := ops.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener failed", "addr", ops.Addr, "err", err)
		}
	}()
	err = sim.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ops.Shutdown(sctx)
	return err
}
