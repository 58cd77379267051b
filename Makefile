# core-dict: `make run` and `make test` are all a newcomer needs (README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO   ?= go
TOOL := $(GO) tool -modfile=tools/go.mod

# Local defaults; any of them can be overridden from the environment.
export DATABASE_URL      ?= postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable
export JWT_SECRET        ?= local-dev-secret-0123456789abcdef0123
export DICT_PARTICIPANTS ?= 12345678,87654321
export DICT_PARTICIPANT_CATEGORY ?= A
export DICTSIM_DATABASE_URL ?= postgres://coredict:coredict@127.0.0.1:5432/dictsim?sslmode=disable

GEN_TMP := .deps/gen-check

.PHONY: run test deps deps-down build gen gen-check lint vet fmt-check tidy-check bench tools

## run: install and start the local services, migrate, serve on :9090 (metrics on :9091).
run: deps build
	scripts/deps.sh db dictsim
	./bin/core-dict migrate
	./bin/core-dict dictsim & sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; ./bin/core-dict serve

## test: the same services, then every check and test.
test: deps gen-check fmt-check tidy-check vet
	$(GO) test -race -count=1 ./...

## deps: install what is missing and start PostgreSQL, Redis and Pulsar.
deps:
	scripts/deps.sh up

deps-down:
	scripts/deps.sh down

build:
	$(GO) build -o bin/core-dict .

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
