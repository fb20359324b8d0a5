#!/usr/bin/env bash
# Installs the system packages the build and the pictures need, where they are missing (Debian-like systems):
# plotters draws text through fontconfig and freetype (pkg-config finds them at build time) and needs a
# sans-serif font at run time.
set -euo pipefail
command -v dpkg >/dev/null 2>&1 || exit 0
need=()
for p in pkg-config libfontconfig1-dev libfreetype-dev fonts-dejavu-core; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "ensure-build-deps: please install ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
echo "ensure-build-deps: installing ${need[*]}" >&2
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
