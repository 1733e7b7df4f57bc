# vsockns: build, test and demo targets. `make test` is what CI runs.
# GO: a go command at least as new as go.mod's go line; scripts/ensure-go.sh
# finds it (PATH, /usr/local/go) or fetches it (a fresh Debian 12 has none).
# Tests run `go` themselves, so its directory goes first on the PATH.
ifeq ($(origin GO),undefined)
GO := $(shell scripts/ensure-go.sh)
ifeq ($(GO),)
$(error no usable Go toolchain: see the ensure-go message above)
endif
export PATH := $(dir $(GO)):$(PATH)
endif
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# The whole suite must finish well inside CI's limit; the VM boots are the
# long part (about 3 s each under TCG plus the tests).
TEST_TIMEOUT ?= 40m

.PHONY: all test vet host-test vm-test kernel qemu cc demo bench bench-scale bench-ss soak soak-race clean

all: test

## test: everything, on a fresh Debian 12 machine as root: QEMU, a C
## compiler (for the race detector), kernels, vet, host tests and the VM
## matrix (the newest Linux 7.x of trixie-backports and sid, and 6.1).
test: qemu cc kernel vet
	VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./... 2>&1 | scripts/summarize-tests

STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := .cache/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck

vet: $(STATICCHECK)
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) build ./...
	for os in linux darwin windows; do GOOS=$$os $(STATICCHECK) ./... || exit 1; done

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## host-test: only what runs without QEMU (the VM tests skip and say why).
host-test:
	$(GO) test -count=1 ./...

## vm-test: only the VM matrix (needs `make qemu cc kernel` first).
vm-test:
	VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v -run '^TestVM$$' ./internal/vm 2>&1 | scripts/summarize-tests

## kernel: fetch Debian's newest 7.x cloud kernels (trixie-backports, sid)
## and Debian 12's 6.1.
kernel:
	scripts/fetch-kernels.sh

## qemu: install qemu-system-x86 when missing (root on Debian), or say how.
qemu:
	@scripts/ensure-qemu.sh

## cc: install gcc and libc6-dev when missing (the -race test binaries use cgo).
cc:
	@scripts/ensure-cc.sh

## demo: the README's main command: the seed article's scenarios in the VM.
demo: qemu kernel
	VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^TestDemo$$' -v ./internal/vm

## bench: the benchmarks side by side, in the >= 7.0 VM.
bench: qemu kernel
	VSOCKNS_BENCH=1 VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout 90m -run '^TestBench$$' -v ./internal/vm

## bench-scale: the node-scale matrix (namespaces and fake guests by the
## hundred), each case in a process of its own, in the newest 7.x VM.
bench-scale: qemu kernel
	VSOCKNS_BENCH_SCALE=1 VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout 100m -run '^TestBenchScale$$' -v ./internal/vm

## bench-ss: `vsockns ss --all` over 1000 namespaces beside ss(8) run once
## per namespace (this machine's iproute2 packed into the guest).
bench-ss: qemu kernel
	VSOCKNS_BENCH_SS=1 VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout 40m -run '^TestBenchSS$$' -v ./internal/vm

## soak: TestSoak (workers over a churning pool of namespaces and fake
## guests, faults injected; 0 misroutes and 0 leaks or it fails) for SOAK
## in the newest 7.x VM; soak-race: the same under the race detector.
## Every `make test` runs a short one (15 s) on each kernel.
SOAK ?= 3m
soak: qemu kernel
	VSOCKNS_SOAK=$(SOAK) VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout 0 -run '^TestSoakVM$$' -v ./internal/vm

soak-race: qemu cc kernel
	VSOCKNS_SOAK=$(SOAK) VSOCKNS_SOAK_RACE=1 VSOCKNS_REQUIRE_VM=1 $(GO) test -count=1 -timeout 0 -run '^TestSoakVM$$' -v ./internal/vm

clean:
	rm -rf .cache/vm
