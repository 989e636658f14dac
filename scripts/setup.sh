# Sourced by scripts/test and scripts/demo: on a fresh Debian 12 machine, as root, install
# the Debian packages the bed needs and the project's virtualenv. Idempotent and quick
# when everything is already there. `python -m testbed up` (below, and once per lane in
# scripts/test) also fetches Debian 13's engine 26 and cosign into the bed's own prefix
# (/var/lib/twilight-bed), once per machine.
# shellcheck shell=bash
_t0=$(date +%s.%N)
elapsed() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$_t0"; }

# busybox-static also goes into the proxy image, which takes nginx as .debs (apt-get
# download, testbed/proxy_image.py): nginx itself is never installed on the host.
# iproute2: the agent's `ip neigh replace` after a stop-first start (minimal images lack it).
BED_PACKAGES=(docker.io docker-registry busybox-static debootstrap docker-compose python3-venv iproute2)
quiet_service() {
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$1.service" >/dev/null 2>&1 || true
  else
    if [ -x "/etc/init.d/$1" ]; then "/etc/init.d/$1" stop >/dev/null 2>&1 || true; fi
    if command -v systemctl >/dev/null; then systemctl disable "$1.service" >/dev/null 2>&1 || true; fi
    update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for pkg in "${BED_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}"; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${need[*]} (run as root to install them)" >&2
    exit 2
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' own services stay stopped (policy-rc.d): the bed starts what it needs.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Without a policy-rc.d (a host rather than a container) postinst starts Prometheus on
  # :9090, node_exporter on :9100 and mosquitto on :1883: the tests run their own on
  # loopback ports, so stop and disable what this install started (a service installed
  # before is left as it was).
  for pkg in "${need[@]}"; do
    case "$pkg" in prometheus|prometheus-node-exporter|mosquitto) quiet_service "$pkg" ;; esac
  done
fi

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# The runtime dependencies exactly as a host gets them (deploy/requirements.txt, hashes
# checked), then the package and the test tools.
if ! out=$(.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    --only-binary=:all: -r deploy/requirements.txt 2>&1); then
  printf '%s\n' "$out" >&2
  echo "setup: the pinned dependencies (deploy/requirements.txt) did not install" >&2
  exit 1
fi
# The docs extra: scripts/test and tests/unit/test_docs_site.py build the manual strictly.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,docs]' 2>&1 \
  | grep -vE '^(WARNING: Location|  |$)' || true
echo "setup: toolchain ready after $(elapsed)s"

# Bring the bed up unless it already runs (on the engine TESTBED_ENGINE names, if set);
# at exit, tear down what this run started, or switch back to the engine it found.
bed_status=$(.venv/bin/python -m testbed status)
bed_engine=$(sed -n 's/.*"engine_key": "\([0-9.]*\)".*/\1/p' <<<"$bed_status")
if grep -q '"engine": true, "registry": true' <<<"$bed_status" \
    && { [ -z "${TESTBED_ENGINE:-}" ] || [ "$TESTBED_ENGINE" = "$bed_engine" ]; }; then
  echo "setup: reusing the running test bed (engine $bed_engine)"
elif grep -q '"engine": true, "registry": true' <<<"$bed_status"; then
  echo "setup: switching the running test bed from engine $bed_engine to $TESTBED_ENGINE"
  .venv/bin/python -m testbed up --engine "$TESTBED_ENGINE"
  # shellcheck disable=SC2064  # the engine found now is the one to put back
  trap ".venv/bin/python -m testbed fleet down; .venv/bin/python -m testbed up --engine $bed_engine" EXIT
else
  .venv/bin/python -m testbed up
  # a fleet an interrupted tests/fleet left goes first (its nodes are engines of their own)
  trap '.venv/bin/python -m testbed fleet down; .venv/bin/python -m testbed down' EXIT
fi
echo "setup: test bed up after $(elapsed)s (budget: 120s on a fresh machine)"
