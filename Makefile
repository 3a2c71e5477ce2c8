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

.PHONY: help brokers brokers-down brokers-status test smoke restart-check bench-inprocess bench-peers

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

bench-peers: ## polybus, raw clients and Watermill on mem://, embedded:// and every broker in brokers.env, interleaved (benchmarks/out/peers*.json)
	set -o pipefail; if [ -f $(ENV_FILE) ]; then . $(ENV_FILE); fi; \
	  cd benchmarks && POLYBUS_BENCH_PEERS=1 go test -count=1 -run '^TestPeers$$' -v -timeout 90m . | tee /tmp/polybus-peers.txt
