#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to run Meridian's integration tests with
# scripts/localinfra.py: PostgreSQL server binaries, Java 17 and Maven (the Kafka broker
# runs from jars that Maven fetches from Maven Central into ~/.cache/meridian once), plus
# Chromium and chromedriver for the control plane's page test (headless, over WebDriver), and
# Prometheus with promtool (Debian's `prometheus` package) for the dashboard and alert-rule
# tests: tests/integration/test_dashboards.py and test_prometheus_real.py.
#
# Usage (as root, e.g. at the start of .ci/run):  bash scripts/ci-prereqs.sh
#
# Quiet and fast when everything is present; `apt-get update` runs only if something has
# to be installed. Exits non-zero with a clear message when a prerequisite is missing and
# cannot be installed (not root, no apt-get, package failure).
set -euo pipefail

log() { printf 'ci-prereqs: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_initdb() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}

# Major version of the `java` on PATH (0 when absent or unparsable).
java_major() {
  local out
  command -v java >/dev/null || { echo 0; return; }
  out=$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9.]*\).*/\1/p' | head -n1) || true
  case "$out" in
    1.*) out=${out#1.} ;;  # "1.8.0_x" is Java 8
  esac
  echo "${out%%.*}" | grep -E '^[0-9]+$' || echo 0
}

have_chromium() {
  command -v chromium >/dev/null || [[ -x /usr/lib/chromium/chromium ]]
}

# The server and promtool come together in Debian's package (the Recommends, node-exporter,
# are not installed). The tests run the server themselves; its systemd unit is not needed.
have_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null
}

packages=()
have_initdb || packages+=(postgresql)
(( $(java_major) >= 17 )) || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)
have_chromium || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
have_prometheus || packages+=(prometheus)

if (( ${#packages[@]} > 0 )); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${packages[*]}; run as root: apt-get update && apt-get install -y ${packages[*]}"
  fi
  command -v apt-get >/dev/null || die "missing ${packages[*]} and no apt-get to install them"
  log "installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Verify, so a failed or partial install is reported here rather than as a test failure.
have_initdb || die "PostgreSQL server binaries (initdb) still missing: apt-get install -y postgresql"
id -u postgres >/dev/null 2>&1 \
  || die "no 'postgres' OS user (Debian's postgresql package creates it); needed to run as root"
(( $(java_major) >= 17 )) \
  || die "Java 17 is required to run the Kafka broker: install openjdk-17-jre-headless"
command -v mvn >/dev/null \
  || die "Maven is required to fetch the Kafka broker jars from Maven Central: install maven"
have_chromium \
  || die "Chromium is required for the control plane's page test (headless): install chromium"
command -v chromedriver >/dev/null \
  || die "chromedriver is required to drive Chromium in that test: install chromium-driver"
have_prometheus \
  || die "prometheus and promtool are required by the dashboard and alert-rule tests: install prometheus"
promtool --version >/dev/null 2>&1 \
  || die "promtool is installed but does not run: reinstall prometheus"
exit 0
