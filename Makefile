# polybus developer tasks. `make help` lists them.
#
# Brokers come from scripts/brokers (no Docker needed): it caches everything in
# $(POLYBUS_CACHE) and writes the brokers' URLs to $(POLYBUS_CACHE)/brokers.env.
# See docs/brokers.md.

SHELL := /bin/bash
POLYBUS_CACHE ?= $(HOME)/.cache/polybus
export POLYBUS_CACHE
BROKERS := scripts/brokers
ENV_FILE := $(POLYBUS_CACHE)/brokers.env
GOTEST := go test -race -count=1

.PHONY: help brokers brokers-down brokers-status test smoke restart-check bench-inprocess bench bench-memory bench-peers

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

brokers: ## start every broker (a no-op for those already healthy)
	$(BROKERS) up

brokers-down: ## stop the brokers scripts/brokers started (data is kept)
	$(BROKERS) down

brokers-status: ## one line per broker: healthy/down, pid, URL, version
	$(BROKERS) status

test: brokers ## brokers up, then go test -race ./... with their URLs
	. $(ENV_FILE) && POLYBUS_PYTHON=$$(scripts/pyenv) $(GOTEST) ./...

smoke: brokers ## one message through each broker with its raw Go client
	. $(ENV_FILE) && $(GOTEST) -v -run 'TestSmoke' ./internal/brokertest/

restart-check: brokers ## restart each broker; a message sent before must survive
	. $(ENV_FILE) && POLYBUS_RESTART_TEST=1 $(GOTEST) -v -run 'TestDataKeptAcrossRestart' ./internal/brokertest/

bench-inprocess: ## polybus mem:// against a bare channel and Watermill's GoChannel (benchmarks/, benchstat table)
	cd benchmarks && go test -run '^$$' -bench InProcess -benchmem -count 6 . | tee /tmp/polybus-inprocess.txt
	cd benchmarks && go run golang.org/x/perf/cmd/benchstat@latest /tmp/polybus-inprocess.txt

BENCH_OUT ?= bench-out
BENCH_ARGS ?= -n 100000 --rounds 3

bench: brokers ## polybus bench on every broker scripts/brokers started, plus embedded:// and mem:// (JSON + HTML in $(BENCH_OUT))
	mkdir -p $(BENCH_OUT)
	. $(ENV_FILE) && go run ./cmd/polybus bench $(BENCH_ARGS) --url embedded://$$(mktemp -d) --url mem:// \
		--url "$$POLYBUS_KAFKA_URL" --url "$$POLYBUS_NATS_URL" --url "$$POLYBUS_AMQP_URL" --url "$$POLYBUS_SQS_URL" \
		--json $(BENCH_OUT)/bench.json --html $(BENCH_OUT)/bench.html

bench-memory: brokers ## the bench process's memory over a 1,000,000-message steady run on Kafka (heap samples in the JSON)
	mkdir -p $(BENCH_OUT)
	. $(ENV_FILE) && go run ./cmd/polybus bench --url "$$POLYBUS_KAFKA_URL" --phases steady --rate 15000 \
		--steady-messages 1000000 --memory --json $(BENCH_OUT)/memory.json --html $(BENCH_OUT)/memory.html

bench-peers: brokers ## polybus, the raw clients, Watermill and Go CDK on each broker, interleaved (benchmarks/out/peers*.json, .html)
	set -o pipefail; . $(ENV_FILE) && \
	  cd benchmarks && POLYBUS_BENCH_PEERS=1 go test -count=1 -run '^TestPeers$$' -v -timeout 90m . | tee /tmp/polybus-peers.txt
