# Canopy: one HTCondor pool across many OpenStack clouds.
#   make demo    run hub + two site agents + local VMs on loopback
#   make check   every test (unit, integration against real services, fuzz seeds, lint)
#   make test    the quick unit subset
#   make fuzz    every fuzz target, FUZZTIME each (default 60s)
#   make package .deb packages for hub, agent and vmagent in dist/
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BINS := ./hub/cmd/hub ./agent/cmd/agent ./vmagent/cmd/vmagent

.PHONY: build demo test check lint bench bench-scale fuzz testbed-up testbed-down integration clean package

build:
	$(GO) build -o bin/ $(BINS)

demo: build
	$(GO) run ./deploy/demo/cmd/demo --bin bin --dir .demo

test:
	$(GO) test -count=1 ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags integration ./...

# Real services the integration tests use (installed and started by the
# project's own scripts under deploy/testbed/).
testbed-up:
	deploy/testbed/up.sh

testbed-down:
	deploy/testbed/down.sh

integration: testbed-up
	$(GO) test -count=1 -p 1 -timeout 45m -tags integration ./...

check: lint
	$(MAKE) integration; rc=$$?; $(MAKE) testbed-down; exit $$rc

# Go benchmarks, then the hub's scale harness (deploy/scale): this build's
# hub at 100 sites x 20,000 VMs x 300,000 idle jobs over real QUIC + mTLS on
# loopback, about 4 minutes. SCALE_HUBS="old-hub bin/hub" compares builds
# side by side in one run.
SCALE_HUBS ?= bin/hub
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(MAKE) bench-scale

bench-scale: build
	$(GO) run ./deploy/scale/cmd/scale --dir .scale $(SCALE_HUBS)

# Every fuzz target in turn (deploy/fuzz.sh): FUZZTIME each, a summary
# table at the end, non-zero exit if any failed. FUZZ_MATCH=regex picks
# targets, FUZZ_PARALLEL=n bounds the workers, FUZZMINIMIZETIME (default
# 3s) bounds the minimization of each new input.
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) deploy/fuzz.sh

# Debian packages (deploy/package, nfpm as a Go library: nothing to install).
# VERSION defaults to 0.0.0~git<commit>; the binaries are built for
# GOARCH (default: this machine's) without cgo.
VERSION ?= 0.0.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
GOARCH ?= $(shell $(GO) env GOARCH)
package:
	rm -rf dist/bin && mkdir -p dist/bin
	CGO_ENABLED=0 GOARCH=$(GOARCH) $(GO) build -trimpath -o dist/bin/ $(BINS)
	$(GO) run ./deploy/package --bin dist/bin --out dist --version $(VERSION) --arch $(GOARCH)

clean:
	rm -rf bin .demo .scale dist
