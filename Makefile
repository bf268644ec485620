# Herald developer commands. "make test" is the README's test command.
GO ?= go
STATICCHECK_VERSION := v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: run test race lint bench bench-scenarios compare tidy build chaos chaos-short

## run: run Herald with every role and embedded storage on :8080
run:
	$(GO) run ./cmd/herald

## build: build bin/herald
build:
	$(GO) build -o bin/herald ./cmd/herald

## test: everything CI runs: vet, all tests with -race, short fuzz runs
test:
	bash .ci/test.sh

## race: the unit and integration tests with the race detector only
race:
	$(GO) test -race -count=1 ./...

## lint: gofmt, go vet, staticcheck
lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck && $(GOBIN)/staticcheck -version | grep -q "($(patsubst v%,%,$(STATICCHECK_VERSION)))" || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...
	cd benchmarks/baselines && $(GO) vet ./... && $(GOBIN)/staticcheck ./...

## chaos-short: the short chaos drill that make test runs: every fault once, about 2 minutes
chaos-short:
	$(GO) test -count=1 -timeout 20m -run '^TestChaosShort$$' -v ./benchmarks/chaos

## chaos: the full drill (every fault once, a 15 s freeze), then a randomized soak of mixed faults
## (CHAOS_SOAK, default 10m); reports in benchmarks/results/scratch/
CHAOS_SOAK ?= 10m
chaos:
	mkdir -p benchmarks/results/scratch
	$(GO) test -count=1 -timeout 30m -run '^TestChaosShort$$' -v ./benchmarks/chaos -args \
		-chaos-freeze 15s -chaos-report $(CURDIR)/benchmarks/results/scratch/chaos-full.json
	$(GO) test -count=1 -timeout 120m -run '^TestChaosSoak$$' -v ./benchmarks/chaos -args \
		-chaos-soak $(CHAOS_SOAK) -chaos-report $(CURDIR)/benchmarks/results/scratch/chaos-soak.json

## bench: the micro-benchmarks (not the load scenarios)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v '/benchmarks$$')

## bench-scenarios: the load scenarios at 15,000 connections as go benchmarks
bench-scenarios:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./benchmarks/

## compare: idle and broadcast, Herald against every baseline, as in benchmarks/RESULTS.md
compare:
	$(GO) run ./cmd/herald-bench compare --conns 2000,5000,10000,15000 --rounds 3

## tidy: fail if go.mod or go.sum are not tidy
tidy:
	$(GO) mod tidy
	git diff --exit-code go.mod go.sum
