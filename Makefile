# core-dict: `make run` and `make test` are all a newcomer needs (README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO   ?= go
TOOL := $(GO) tool -modfile=tools/go.mod

# Local defaults; any of them can be overridden from the environment.
# The service connects as coredict_app, which row-level security applies to; the tables' owner
# (coredict) runs the migrations. scripts/deps.sh creates both roles.
export DATABASE_URL      ?= postgres://coredict_app:coredict_app@127.0.0.1:5432/coredict?sslmode=disable
export MIGRATE_DATABASE_URL ?= postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable
export JWT_SECRET        ?= local-dev-secret-0123456789abcdef0123
export DICT_PARTICIPANTS ?= 12345678,87654321
export DICT_PARTICIPANT_CATEGORY ?= A
export DICTSIM_DATABASE_URL ?= postgres://coredict:coredict@127.0.0.1:5432/dictsim?sslmode=disable

GEN_TMP := .deps/gen-check

.PHONY: run test deps deps-down build gen gen-check lint vet fmt-check tidy-check bench tools web web-browser

## run: install and start the local services, migrate, serve on :9090 (metrics on :9091); both processes
## send their traces to the local Jaeger (query API http://127.0.0.1:16686; OTEL_EXPORTER_OTLP_ENDPOINT=
## sends none).
run: deps web build
	scripts/deps.sh db dictsim
	./bin/core-dict migrate
	export OTEL_EXPORTER_OTLP_ENDPOINT=$${OTEL_EXPORTER_OTLP_ENDPOINT-http://127.0.0.1:4318}; \
	./bin/core-dict dictsim & sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; ./bin/core-dict serve

## test: the same services and Prometheus (the dashboards' test runs Debian's), then every check and test.
## One package at a time (-p 1): the packages' tests each load the machine's 2 cores with Pulsar, the
## race detector and (web) Chromium; side by side they starved each other into timeouts.
test: deps web web-browser gen-check fmt-check tidy-check vet
	scripts/deps.sh up prometheus
	$(GO) test -race -count=1 -p 1 -timeout=30m ./...

## deps: install what is missing and start PostgreSQL, Redis, Pulsar and Jaeger (the traces of `run`,
## and the test that finds them there).
deps:
	DEPS_JAEGER=1 scripts/deps.sh up

deps-down:
	scripts/deps.sh down

build:
	$(GO) build -o bin/core-dict .

## web: build the browser console into web/dist/console (embedded by the next build) when missing or stale.
WEB_INPUTS := $(shell find web/src web/proto -type f -not -path 'web/src/gen/*' 2>/dev/null) \
	web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json web/buf.gen.yaml \
	rpc/dict/v1/dict.proto
web: web/dist/console/index.html
web/dist/console/index.html: $(WEB_INPUTS)
	scripts/web.sh build

## web-browser: install Debian's Chromium for the console's browser test (go test ./web/).
web-browser:
	scripts/web.sh chromium

## gen: regenerate the Go code of rpc/dict/v1 (buf) and sqlc/ (sqlc).
gen:
	$(TOOL) buf lint
	$(TOOL) buf generate
	$(TOOL) sqlc generate

## gen-check: fail when regenerating would change the committed generated code.
gen-check:
	$(TOOL) buf lint
	rm -rf $(GEN_TMP) && mkdir -p $(GEN_TMP)
	$(TOOL) buf generate -o $(GEN_TMP)
	diff -r $(GEN_TMP)/rpc/dict/v1 rpc/dict/v1 -x '*.proto' || { echo "rpc/dict/v1 is stale: run 'make gen' and commit" >&2; exit 1; }
	$(TOOL) sqlc diff || { echo "sqlc/ is stale: run 'make gen' and commit" >&2; exit 1; }
	rm -rf $(GEN_TMP)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

vet:
	$(GO) vet ./...

## bench: the benchmarks of docs/BENCHMARKS.md, in one run.
bench: deps
	$(GO) test -run='^$$' -bench=. -benchtime=2s ./dict/ ./rpc/

## tools: build buf and grpcurl into bin/ for the README's examples.
tools:
	$(GO) build -modfile=tools/go.mod -o bin/ github.com/bufbuild/buf/cmd/buf github.com/fullstorydev/grpcurl/cmd/grpcurl
