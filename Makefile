# Two commands set everything up on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
export CARGO_BUILD_JOBS ?= 2
CARGO ?= cargo

# Where `make run` listens, and where its embedded PostgreSQL keeps its data.
LISTEN ?= 127.0.0.1:9201
EMBEDDED_DIR ?= $(CURDIR)/.data/embedded-postgres
ARGS ?=

.PHONY: help deps deps-run tools crds images build run test e2e bench lint fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install the Debian packages needed to run and test (postgresql, prometheus, openssl, buildah, podman, runc)
	@scripts/install-deps.sh test

deps-run: ## install the Debian packages `make run` needs (postgresql, prometheus)
	@scripts/install-deps.sh

tools: ## build the Go test tools (kube-apiserver, etcd, helm, kubeconform, Prometheus 3) from the pinned modules in e2e/tools, once
	@e2e/tools/build.sh all >/dev/null

crds: ## regenerate the CRD YAML (crds/ and the Helm chart) from the Rust types in crds/src
	$(CARGO) run -q -p promscale-crds --bin crdgen -- crds --chart charts/promscale-operator/templates/crds

images: deps ## build the promscale-connector and promscale-operator images from the release binaries (buildah, offline)
	$(CARGO) build --release -p promscale-connector -p promscale-operator
	images/build.sh target/release

build: ## build every binary of the workspace (debug)
	$(CARGO) build --workspace --bins

run: deps-run ## build and start the connector on $(LISTEN); without PROMSCALE_DB_URI it starts its own PostgreSQL
	$(CARGO) build --release -p promscale-connector
	./target/release/promscale-connector --web.listen-address $(LISTEN) --embedded.dir $(EMBEDDED_DIR) $(ARGS)

test: deps tools build images ## run every test: unit tests and end-to-end tests on real PostgreSQL, Prometheus and kube-apiserver
	$(CARGO) test --workspace --no-fail-fast

e2e: deps tools build images ## the whole path on a test API server: helm install, examples, operator and connector as their pods, Prometheus, PromQL and SQL, helm upgrade and uninstall
	$(CARGO) test -p promscale-e2e --test full_path -- --nocapture

bench: deps-run ## side by side with Prometheus 2.42 (3.16 for remote write 2.0): remote-write throughput, bytes per sample on disk, query latency over 1 h, 24 h and 7 days
	@e2e/tools/build.sh prometheus3 >/dev/null
	$(CARGO) build --release -p promscale-connector -p promscale-e2e --bins
	./target/release/remote-write-bench
	./target/release/storage-bench
	./target/release/query-bench --hours 168

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

clean: ## remove build output and the embedded database of `make run`
	$(CARGO) clean
	rm -rf .data
