# One entry point for people and CI. Everything runs from a local virtual
# environment that the first target creates from pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv run test system-packages test-fast soak bench bench-quick profile proto wheelhouse lint-ansible provision-venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The daemon on its embedded default config: 127.0.0.1:50051, data in ./pacsvault-data.
run: venv
	$(VENV)/bin/pacsvaultd $(ARGS)

# Every test, slow ones included (CI runs exactly this).
test: system-packages venv
	$(PY) -m pytest $(PYTEST_ARGS)

# The Debian packages the tests drive (Ceph, dcmtk, Chromium, rsyslog, ...), installed when missing (root).
system-packages:
	bash tests/system-packages.sh

# Skips tests marked slow; for quick local iterations only.
test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# A bounded thrash soak of a real pair (kill -9, bit-flips, a full volume, peer outages under a
# model-based client), ending with a full scrub and a clean check; not part of `make test`.
# 10 minutes by default: make soak ARGS="--minutes 2".
soak: venv
	$(PY) -m tests.soak.thrash $(ARGS)

# Every benchmark; each prints its table and writes bench/results/*.json.
# side_by_side.py and dimse.py install the Debian package orthanc if it is missing (root or sudo);
# dimse.py needs dcmtk's storescu;
# s3_tier.py needs Ceph's (.ci/run installs them).
bench: venv
	$(PY) bench/compression.py
	$(PY) bench/ingest_retrieve.py
	$(PY) bench/tier_mover.py
	$(PY) bench/replication.py
	$(PY) bench/side_by_side.py
	$(PY) bench/dimse.py
	$(PY) bench/index_scale.py
	$(PY) bench/security_cost.py
	$(PY) bench/s3_tier.py
	$(PY) bench/dicomweb.py
	$(PY) bench/integrity.py

bench-quick: venv
	$(PY) bench/compression.py --quick --json-out bench/results/compression_quick.json
	$(PY) bench/ingest_retrieve.py --quick --json-out bench/results/quick.json
	$(PY) bench/tier_mover.py --quick --json-out bench/results/tier_mover_quick.json
	$(PY) bench/replication.py --quick --json-out bench/results/replication_quick.json
	$(PY) bench/side_by_side.py --quick
	$(PY) bench/dimse.py --quick
	$(PY) bench/index_scale.py --quick
	$(PY) bench/security_cost.py --quick
	$(PY) bench/s3_tier.py --quick
	$(PY) bench/dicomweb.py --quick
	$(PY) bench/integrity.py --quick --json-out bench/results/integrity_quick.json

# Where an ingest and a small retrieval spend their time (py-spy + /proc); needs ptrace rights.
profile: venv
	$(PY) bench/profile.py $(ARGS)

# The offline install set the Ansible role copies to appliances.
wheelhouse: venv
	ansible/build-wheelhouse.sh

# A field engineer's controller: only what provisioning needs (pyproject's [provision]:
# pacsvault and ansible-core), the role's collections (ansible/requirements.yml), and
# the wheelhouse. Then: cd ansible && ../.venv-provision/bin/ansible-playbook -i inventory/SITE pacsvault-pair.yml
PROVISION_VENV ?= .venv-provision
provision-venv:
	$(PYTHON) -m venv $(PROVISION_VENV)
	$(PROVISION_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PROVISION_VENV)/bin/python -m pip install --quiet '.[provision]'
	$(PROVISION_VENV)/bin/ansible-galaxy collection install -r ansible/requirements.yml -p ansible/collections
	PYTHON=$(CURDIR)/$(PROVISION_VENV)/bin/python ansible/build-wheelhouse.sh

lint-ansible: venv
	cd ansible && ../$(VENV)/bin/ansible-lint && ../$(VENV)/bin/ansible-playbook --syntax-check -i inventory/example pacsvault-pair.yml

# Regenerates proto/src from proto/pacsvault/**/*.proto.
proto: venv
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) pacsvault-data .pytest_cache
