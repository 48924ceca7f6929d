#!/usr/bin/env bash
# Installs what building and testing Gatehouse needs on a fresh Debian machine with
# rustup: the wasm32-wasip2 target (for plugins) and redis-server (for the shared
# rate-limit tests). Safe to run again.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
