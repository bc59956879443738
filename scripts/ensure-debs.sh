#!/usr/bin/env bash
# Installs the Debian packages the test-suite runs for real, only those whose command is missing.
# Each entry is "command:package".
set -euo pipefail
needed=(bwrap:bubblewrap promtool:prometheus)
missing=()
for entry in "${needed[@]}"; do
  cmd=${entry%%:*}; pkg=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
