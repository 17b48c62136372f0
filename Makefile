# mailcluster — the two commands that matter are `make run` and `make test`.
GO      ?= go
BIN     := bin/mailcluster
DEVDIR  ?= ./dev-cluster
# Packages whose tests spin up many goroutines per node get the race
# detector; see TESTING in the README for why not all of them.
RACE_PKGS := ./clusternet/... ./consensus/... ./node/... ./replication/... ./protocol/... ./message/...

.PHONY: build run test test-race test-all bench lint chaos clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/mailcluster

## run: start a 3-node cluster on loopback with a demo account (Ctrl-C stops it)
run: build
	./$(BIN) dev --dir $(DEVDIR)

## test: what CI runs — lint, unit and multi-node tests (race detector on the concurrent packages)
test: lint
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

## bench: print throughput and latency figures (never part of `make test`)
bench:
	$(GO) test -run '^$$' -bench . -benchtime=1x -timeout 60m ./consensus/ ./test/bench/ ./test/imap/

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin $(DEVDIR)
