#!/usr/bin/env bash
# The runbook's script, kept for muscle memory: runs db-refresh in dev through flywheel.
#   ./scripts/run-dev-db-refresh.sh                       # a full refresh
#   ./scripts/run-dev-db-refresh.sh --skip-steps=1,2,3    # reuse steps 1-3 (also 1-3, "1, 2, 3", ids)
#   ./scripts/run-dev-db-refresh.sh --dry-run             # print the plan, run nothing
# After a failure you do not need step numbers at all: `flywheel resume --env dev`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flywheel="${FLYWHEEL:-$here/.venv/bin/flywheel}"
[ -x "$flywheel" ] || { echo "flywheel is not installed: run 'make sync' in $here first" >&2; exit 3; }
exec "$flywheel" run db-refresh --env dev "$@"
