#!/usr/bin/env bash
# `eat up`, `eat certs dev` and the tests make development TLS certificates with the openssl command:
# install it (Debian) where it is missing.
set -euo pipefail

if command -v openssl >/dev/null 2>&1; then
  exit 0
fi
echo "openssl is not installed; installing it with apt-get (Debian)..."
if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq openssl
else sudo apt-get update -qq && sudo apt-get install -y -qq openssl; fi
