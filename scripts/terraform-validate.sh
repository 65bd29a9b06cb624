#!/usr/bin/env bash
# `terraform validate` of every stack under infra/stacks (part of `make test`).
#
# Runs on a copy of infra/ in a temporary folder (no .terraform/ or lock file left in the checkout), with
# `init -backend=false` (no state bucket, no credentials). Providers come from a local mirror when one
# exists (FLYWHEEL_TF_PLUGIN_MIRROR, default /opt/tf-plugins), else from the Terraform registry.
# Without a `terraform` binary, or when the provider cannot be installed, it says so and exits 0: the
# HCL is still parsed and checked by tests/aws/test_terraform.py in every run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v terraform >/dev/null 2>&1; then
    echo "terraform validate: SKIPPED, no terraform binary on PATH (install Terraform >= 1.6 to run it;" \
         "tests/aws/test_terraform.py still parses and checks the HCL)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/infra" "$work/infra"
find "$work/infra" -name .terraform -prune -exec rm -rf {} + -o -name .terraform.lock.hcl -exec rm -f {} +

mirror="${FLYWHEEL_TF_PLUGIN_MIRROR:-/opt/tf-plugins}"
config="$work/terraformrc"
if [ -d "$mirror" ]; then
    cat >"$config" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
RC
else
    : >"$config"
fi
export TF_CLI_CONFIG_FILE="$config" TF_IN_AUTOMATION=1 TF_INPUT=0

status=0
for stack in "$work"/infra/stacks/*/; do
    name="$(basename "$stack")"
    export TF_DATA_DIR="$work/data-$name"
    if ! init_log="$(terraform -chdir="$stack" init -backend=false -no-color 2>&1)"; then
        echo "terraform validate: SKIPPED for $name, the AWS provider could not be installed" \
             "(no registry access and no mirror at $mirror; set FLYWHEEL_TF_PLUGIN_MIRROR):"
        echo "$init_log" | grep -E "Error|error" | head -3
        continue
    fi
    if terraform -chdir="$stack" validate -no-color >"$work/validate.log" 2>&1; then
        echo "terraform validate: $name ok"
    else
        echo "terraform validate: $name FAILED"
        cat "$work/validate.log"
        status=1
    fi
done
exit $status
