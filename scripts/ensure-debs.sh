#!/usr/bin/env bash
# Installs the Debian packages ring-async runs for real, only those whose command is missing.
# Each entry is "command:package"; arguments name the entries to check (default: all the test-suite needs:
# bubblewrap for the code sandbox, prometheus for the monitoring tests).
set -euo pipefail
needed=("$@")
((${#needed[@]})) || needed=(bwrap:bubblewrap promtool:prometheus)
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
