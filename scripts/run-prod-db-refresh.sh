#!/usr/bin/env bash
# The runbook's script for prod: runs db-refresh in prod through flywheel. Asks for confirmation
# unless --yes; --skip-steps, --force and --reuse-stale need --note "why" (journaled with the run).
#   export AWS_PROFILE=flywheel-prod
#   ./scripts/run-prod-db-refresh.sh --skip-steps=1,2,3,4 --note "step 5 schema mapping fixed (INC-12)"
# After a failure you do not need step numbers at all: `flywheel resume --env prod`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flywheel="${FLYWHEEL:-$here/.venv/bin/flywheel}"
[ -x "$flywheel" ] || { echo "flywheel is not installed: run 'make sync' in $here first" >&2; exit 3; }
exec "$flywheel" run db-refresh --env prod "$@"
