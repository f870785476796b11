#!/usr/bin/env bash
# Runs the whole test suite. As root, it first installs and starts a single-node
# SLURM with fake GPUs (tools/slurm.sh) so the tests marked `slurm` run against
# real daemons; elsewhere those tests are skipped with a reason.
#   DARCH_SLURM=off       never start SLURM
#   DARCH_REQUIRE_SLURM=1 fail if SLURM cannot start (CI sets it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
started=0
if [ "${DARCH_SLURM:-auto}" != "off" ] && [ "$(id -u)" = 0 ]; then
  if bash tools/slurm.sh start; then
    started=1
  elif [ "${DARCH_REQUIRE_SLURM:-0}" = 1 ]; then
    echo "tools/test.sh: SLURM did not start and DARCH_REQUIRE_SLURM=1" >&2
    exit 1
  else
    echo "tools/test.sh: SLURM did not start; the slurm tests will be skipped" >&2
  fi
fi
if [ "$started" = 1 ]; then
  trap 'bash tools/slurm.sh stop || true' EXIT
fi
if [ "$(id -u)" = 0 ] && ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -q --no-install-recommends graphviz >/dev/null 2>&1 \
    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends graphviz >/dev/null 2>&1)) \
    || echo "tools/test.sh: graphviz not installed; architecture drawings fall back to text" >&2
fi
export TF_CPP_MIN_LOG_LEVEL=3
"$PY" -m pytest -q -p no:cacheprovider "$@"
