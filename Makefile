# kaccess: `make run` starts a local cluster with the gateway in front of it; `make test` tests.
SHELL := /usr/bin/env bash
GO    ?= go
BIN   := $(CURDIR)/bin
export KACCESS_BIN_DIR := $(BIN)

# libchdb.so, the embedded ClickHouse engine of the default audit store (fetched by `make chdb`).
CHDB_VERSION  := 26.7.3-stable.1
CHDB_LIB_PATH ?= $(CURDIR)/.cache/chdb/$(CHDB_VERSION)/libchdb.so
export CHDB_LIB_PATH

.PHONY: all build deps tools chdb run test fuzz test-clickhouse bench bench-proxy soak lint fmt clean help generate verify-generated

all: build

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build bin/gateway, bin/kaccess-chdb (the embedded audit store's helper) and bin/kaccess
	@echo ">> building bin/gateway, bin/kaccess-chdb, bin/kaccess"
	@$(GO) build -o $(BIN)/gateway ./cmd/gateway
	@$(GO) build -o $(BIN)/kaccess-chdb ./cmd/kaccess-chdb
	@$(GO) build -o $(BIN)/kaccess ./cmd/kaccess

# The real kube-apiserver and etcd, built from Go modules in their own module (hack/tools).
# Rebuilt only when hack/tools changes; the first build takes several minutes.
tools: $(BIN)/kube-apiserver $(BIN)/etcd $(BIN)/oidc-provider $(BIN)/alertmanager $(BIN)/amtool $(BIN)/promtool ## Build the real kube-apiserver, etcd, OpenID provider, Alertmanager (+amtool) and promtool the tests run

$(BIN)/kube-apiserver: hack/tools/go.mod hack/tools/go.sum
	@echo ">> building kube-apiserver from k8s.io/kubernetes (first build: about 5-8 minutes)"
	@cd hack/tools && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-apiserver
	@echo ">> kube-apiserver ready"

$(BIN)/etcd: hack/tools/go.mod hack/tools/go.sum hack/tools/etcd/main.go
	@echo ">> building etcd"
	@cd hack/tools && $(GO) build -o $@ ./etcd

# The real Alertmanager + amtool and promtool, each from its Go module in its own module
# (hack/alertmanager, hack/promtool: their dependency pins conflict with each other and with
# k8s.io/kubernetes). Alertmanager's module holds no web UI assets: build.sh adds a placeholder page.
$(BIN)/alertmanager $(BIN)/amtool &: hack/alertmanager/go.mod hack/alertmanager/go.sum hack/alertmanager/build.sh
	@echo ">> building alertmanager and amtool from github.com/prometheus/alertmanager (first build: about 2-4 minutes)"
	@GO=$(GO) hack/alertmanager/build.sh $(BIN)
	@echo ">> alertmanager and amtool ready"

$(BIN)/promtool: hack/promtool/go.mod hack/promtool/go.sum
	@echo ">> building promtool from github.com/prometheus/prometheus (first build: about 3-6 minutes)"
	@cd hack/promtool && $(GO) build -ldflags "-X github.com/prometheus/common/version.Version=$$($(GO) list -m -f '{{.Version}}' github.com/prometheus/prometheus)" -o $@ github.com/prometheus/prometheus/cmd/promtool
	@echo ">> promtool ready"

chdb: ## Fetch libchdb.so (embedded ClickHouse, 178 MB download) into .cache/chdb
	@CHDB_VERSION=$(CHDB_VERSION) hack/chdb.sh

deps: ## Install the Debian packages the tests run for real (Samba AD, OpenLDAP)
	@hack/deps.sh

$(BIN)/oidc-provider: hack/oidc-provider/go.mod hack/oidc-provider/go.sum hack/oidc-provider/main.go
	@echo ">> building oidc-provider (zitadel/oidc example server)"
	@cd hack/oidc-provider && $(GO) build -o $@ .

run: deps tools chdb build ## Start a local kube-apiserver and the gateway in front of it, and say what to type next
	@$(GO) build -o $(BIN)/devenv ./hack/devenv
	@$(BIN)/devenv

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

test: deps tools chdb lint verify-generated ## Lint, then run every test against real components (needs kubectl on PATH)
	@command -v kubectl >/dev/null || { echo "kubectl is needed on PATH for the end-to-end tests"; exit 1; }
	@echo ">> go test (real etcd + kube-apiserver are started per test binary)"
	@$(GO) test -count=1 -timeout 20m ./...
	@echo ">> go test -race on the concurrent packages"
	@$(GO) test -count=1 -race -timeout 10m ./internal/session/... ./internal/authn/... ./internal/proxy/... ./internal/cli/... ./internal/audit/... ./internal/rbacsync/...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

# make test runs every fuzz target briefly (about 10 targets: ~3 min with compiles); make fuzz
# alone defaults to longer.
TEST_FUZZTIME ?= 10s
FUZZTIME      ?= 1m
fuzz: ## Run each native Go fuzz target for FUZZTIME (default 1m; make test uses 10s): make fuzz [FUZZTIME=30s] [TARGETS="FuzzVerify FuzzLoad"]
	@GO=$(GO) FUZZTIME=$(FUZZTIME) hack/fuzz.sh $(TARGETS)

test-clickhouse: ## The audit store conformance suite on a modern ClickHouse server: make test-clickhouse CLICKHOUSE_ADDR=host:9000
	@test -n "$(CLICKHOUSE_ADDR)" || { echo "usage: make test-clickhouse CLICKHOUSE_ADDR=host:9000 [KACCESS_CLICKHOUSE_USER=u KACCESS_CLICKHOUSE_PASSWORD=p]" >&2; exit 2; }
	KACCESS_CLICKHOUSE_ADDR=$(CLICKHOUSE_ADDR) $(GO) test -count=1 -v -run 'TestConformance' ./internal/audit/clickhouse/

bench: tools chdb ## Benchmarks: gateway vs direct, token verification
	@$(GO) test -run '^$$' -bench . -benchmem ./internal/session/ ./internal/gateway/
	@$(GO) test -run '^$$' -bench 'BenchmarkAD' -benchtime 20x ./internal/authn/ldap/
	@$(GO) test -run '^$$' -bench . -benchmem ./internal/audit/spool/ ./internal/audit/capture/
	@$(GO) test -run '^$$' -bench . -benchtime 30x ./internal/audit/chdb/
	@$(GO) test -run '^$$' -bench Insert -benchtime 10x ./internal/audit/clickhouse/
	@$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/audit/ship/
	@$(GO) test -run '^$$' -bench Queries -benchtime 3x ./internal/audit/query/
	@$(GO) test -run '^$$' -bench Detections -benchtime 3x ./internal/audit/detect/
	@$(GO) test -run '^$$' -bench 'BenchmarkVerify' -benchmem ./internal/authn/oidc/

bench-proxy: tools chdb build ## GETs straight to kube-apiserver and through bin/gateway (audit off/on), side by side: req/s, p50, p99, CPU per request
	@$(GO) build -o $(BIN)/benchproxy ./hack/benchproxy
	@$(BIN)/benchproxy

SOAK ?= 10m
soak: deps tools ## Two replicas under mixed traffic while every dependency fails in turn (default 10m: make soak SOAK=60m); prints the report, writes .run/soak-report.json
	@mkdir -p .run
	@echo ">> soak for $(SOAK): 11 phases (baseline, AD, OIDC, ClickHouse stop and SIGSTOP, API server restart, replica kill, Lease lost, spool disk full, clock skew, recovery)"
	@KACCESS_SOAK=$(SOAK) KACCESS_SOAK_REPORT=$(CURDIR)/.run/soak-report.json $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./hack/soak/

lint: ## gofmt, go vet, staticcheck (the import rules are a test: internal/arch)
	@echo ">> gofmt, go vet, staticcheck"
	@test -z "$$(gofmt -l cmd internal hack)" || { gofmt -l cmd internal hack; echo "run: make fmt"; exit 1; }
	@$(GO) vet ./...
	@$(GO) run $(STATICCHECK) ./...

fmt:
	@gofmt -w cmd internal hack

generate: ## Regenerate api/gen from api/proto (buf lint + generate; fetches protos into .cache/proto)
	@hack/generate.sh

verify-generated: ## Fail if api/gen is stale, buf lint fails, or api/proto breaks compatibility with main
	@hack/verify-generated.sh

clean: ## Remove built binaries and local state
	rm -rf $(BIN) .run
