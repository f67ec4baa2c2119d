# The one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTO_OUT := libs/contracts/src
PROTOS := $(shell find protos -name '*.proto')
GENERATED := $(PROTO_OUT)/boxcost/.generated
PACKAGES := libs/contracts libs/service-kit libs/pg-kit services/billing services/notifier services/webhook-gateway tools/devstack tools/webhook-trigger

.PHONY: help install protos run test test-unit bench trigger render-email messages db db-stop clean lock

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

install: $(INSTALLED) $(GENERATED) ## Create .venv with every service and tool installed

# Every package comes from a lock: exact versions, with hashes checked (requirements/*.in say why each).
LOCKED := --quiet --require-hashes --no-deps --disable-pip-version-check -r

$(VENV)/.deps: requirements/dev.lock requirements/pgserver.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(LOCKED) requirements/dev.lock
	@# PostgreSQL server binaries for the local database: the machine's, else the pgserver wheel's.
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
		|| $(PY) -m pip install $(LOCKED) requirements/pgserver.lock
	touch $@

COMPILE := $(CURDIR)/$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

lock: $(VENV)/.deps ## Pin every dependency, with hashes, after editing requirements/*.in
	cd requirements && $(COMPILE) -o services.lock services.in && $(COMPILE) -o dev.lock dev.in \
		&& $(COMPILE) -o pgserver.lock pgserver.in

protos: $(GENERATED) ## Generate Python code (with .pyi stubs) from protos/

$(GENERATED): $(PROTOS) $(VENV)/.deps
	rm -rf $(PROTO_OUT)/boxcost && mkdir -p $(PROTO_OUT)
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) $(PROTOS)
	find $(PROTO_OUT)/boxcost -type d -exec touch {}/__init__.py \;
	touch $@

$(INSTALLED): $(VENV)/.deps $(GENERATED) $(addsuffix /pyproject.toml,$(PACKAGES))
	$(PY) -m pip install --quiet --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	touch $@

run: install ## Start the whole system (local PostgreSQL when DATABASE_URL is unset)
	$(PY) -m devstack run

test: install ## Check the import rules (.importlinter), then run the whole suite (its own PostgreSQL, mail server)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

test-unit: install ## Run the unit tests only (no sockets)
	$(PY) -m pytest tests/unit

bench: install ## Start the stack on a fresh database (STORED=N: holding N events; EVENTS=N sent), print figures
	$(PY) -m devstack bench $(if $(STORED),--stored $(STORED)) $(if $(EVENTS),--events $(EVENTS))

trigger: install ## Send realistic signed events: make trigger EVENT=payment_intent.succeeded (or FLOW=...)
	$(PY) -m trigger $(if $(FLOW),flow $(FLOW),event $(EVENT)) $(ARGS)

render-email: install ## Render an email with sample data: make render-email KIND=payment_received [LOCALE=hi-IN] [TENANT=none]
	mkdir -p .local/preview
	$(PY) -m notifier render $(KIND) --out .local/preview/$(KIND)$(if $(LOCALE),.$(LOCALE)).html $(if $(TENANT),--tenant $(TENANT)) $(if $(LOCALE),--locale $(LOCALE))

messages: install ## Add the texts the email templates gained to the message catalogs; list what needs translating
	$(PY) -m notifier messages

db: install ## Start the project-local PostgreSQL and print its URL
	$(PY) -m devstack db

db-stop: install ## Stop the project-local PostgreSQL
	$(PY) -m devstack db-stop

clean: ## Remove the virtualenv and generated code (keeps local data in .local/)
	rm -rf $(VENV) $(PROTO_OUT)/boxcost
