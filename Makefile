# mailcluster — the two commands that matter are `make run` and `make test`.
GO      ?= go
BIN     := bin/mailcluster
DEVDIR  ?= ./dev-cluster

.PHONY: build run test bench lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/mailcluster

## run: start a 3-node cluster on loopback with a demo account (Ctrl-C stops it)
run: build
	./$(BIN) dev --dir $(DEVDIR)

## test: what CI runs — lint, then every test (unit, multi-node, real clients) with the race detector
test: lint
	$(GO) test -count=1 -race -timeout 20m ./...

## bench: print throughput and latency figures (never part of `make test`)
bench:
	$(GO) test -run '^$$' -bench . -benchtime=1x -timeout 60m ./consensus/ ./test/bench/ ./test/imap/

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin $(DEVDIR)
