# troupe — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN := ./troupe
# Unit tests: everything but the real-broker suites under integration/.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v /integration)

.PHONY: all build run test unit integration chaos bench bench-go lint fmt deps clean generate

all: build

## build: compile the troupe binary to ./troupe
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/troupe

## run: build and start the embedded stack (troupe dev) on the defaults
run: build
	$(BIN) dev

## test: lint, unit tests, then integration tests against a real Kafka broker
test: deps lint unit integration

## unit: unit tests (kfake, no JVM), with the race detector and shuffled order;
## then the Kubernetes manifests against k8s.io/api (deploy/k8s/validate, a
## module of its own so that k8s.io/api stays out of go.mod)
unit:
	$(GO) test -race -shuffle=on -count=1 $(UNIT_PKGS)
	cd deploy/k8s/validate && $(GO) test -count=1 ./...

## integration: tests against a real Apache Kafka broker fetched from Maven Central
integration:
	$(GO) test -count=1 -timeout 20m -p 1 ./integration/...

## chaos: the long chaos run (16 seeded process and broker faults, three
## replicas of every step and of the coordinator) and a 10-minute soak
## printing RSS, lag and commit time, each on a three-node cluster (~25 min);
## TROUPE_CHAOS_SEED=N replays a schedule
chaos:
	TROUPE_CHAOS=long $(GO) test -count=1 -timeout 60m -p 1 -v -run '^(TestSagaSurvivesBrokerLoss|TestSagaSoak)$$' ./integration/

## bench: the benchmarks of the README's Performance section on a real Kafka broker (a bare pipe, the
## step, Kafka Streams, the saga, restore, Avro); writes README's Performance table
bench:
	$(GO) run ./integration/cmd/bench -readme README.md

## bench-go: the Go micro-benchmarks (kfake, Pebble, Avro)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

## lint: go vet and a gofmt check
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

## deps: check (and under CI install) what the tests need: Java, Maven, kcat, python3-venv, Chromium, promtool
deps:
	@bash .ci/deps

clean:
	rm -f $(BIN)
	rm -rf .troupe
