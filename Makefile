# mailcluster — the two commands that matter are `make run` and `make test`.
GO      ?= go
BIN     := bin/mailcluster
DEVDIR  ?= ./dev-cluster

.PHONY: build run test bench chaos chaos-long lint clean

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

## chaos: build the FROM-scratch image, run 3 containers and break them for ~3 minutes (kill -9,
## freeze, network cut, disk loss, rolling restart) while mail flows; fails on
## any acknowledged message lost, duplicated or altered. Needs docker and docker-compose.
chaos: build
	$(GO) run ./test/chaos/cmd/chaos -duration 3m -report chaos-report.txt

## chaos-long: the same for about 30 minutes, faults in shuffled rounds
chaos-long: build
	$(GO) run ./test/chaos/cmd/chaos -duration 30m -report chaos-report-long.txt

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin $(DEVDIR) chaos-report*.txt chaos-report*.json
