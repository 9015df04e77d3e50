#!/usr/bin/env bash
# System packages the test suite uses: Debian's Chromium, for the test that renders the HTML report.
# Installs it when missing and the machine allows (root + apt-get); otherwise says so and goes on.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the report rendering test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; the report rendering test will be skipped"
else
  echo "warning: chromium not found and cannot be installed here; the report rendering test will be skipped"
fi
