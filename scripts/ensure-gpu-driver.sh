#!/usr/bin/env bash
# Makes sure wgpu can find an adapter. On a machine with a real GPU driver this does nothing.
# On Linux without one it installs lavapipe, Mesa's software Vulkan driver (it runs shaders on the CPU).
# Mesa 24 or newer is required: Mesa 22.3 (Debian 12's default) silently stops each shader invocation after
# 65,535 loop iterations in total (wrong sums, no error) and moves memory 4-5x slower. On Debian 12 the newer
# Mesa comes from the bookworm-backports suite, added with the same mirror the machine already uses.
set -euo pipefail

min_mesa_major=24

log() { printf 'ensure-gpu-driver: %s\n' "$*" >&2; }

[ "$(uname -s)" = "Linux" ] || exit 0

icd_dirs=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d)

has_hardware_icd() {
  local d f
  for d in "${icd_dirs[@]}"; do
    for f in "$d"/*.json; do
      [ -e "$f" ] || continue
      # Mesa's own ICDs (lavapipe and its hardware drivers) ship together in mesa-vulkan-drivers; any other
      # ICD belongs to a vendor driver, which means there is a real GPU to use.
      if command -v dpkg >/dev/null 2>&1 && dpkg -S "$f" 2>/dev/null | grep -q '^mesa-vulkan-drivers'; then continue; fi
      case "$(basename "$f")" in lvp_icd*) ;; *) return 0 ;; esac
    done
  done
  return 1
}

mesa_vulkan_major() {
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  case "$v" in
    "install ok installed "*) v=${v##* }; v=${v#*:}; echo "${v%%.*}" ;;
    *) echo 0 ;;
  esac
}

if has_hardware_icd && [ -z "${CALIBSEG_FORCE_LAVAPIPE:-}" ]; then
  exit 0
fi
if ! command -v dpkg-query >/dev/null 2>&1; then
  log "not a Debian-like system; install Mesa >= $min_mesa_major's lavapipe (or a GPU driver) yourself"
  exit 0
fi
if [ "$(mesa_vulkan_major)" -ge "$min_mesa_major" ] && dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q "ok installed"; then
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    log "no Vulkan driver and not root: run 'apt-get install mesa-vulkan-drivers libvulkan1' (Mesa >= $min_mesa_major) as root"
    exit 1
  fi
fi

codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
packages=(mesa-vulkan-drivers libvulkan1)
# The GL driver (llvmpipe through EGL) is upgraded alongside so both back ends run the same Mesa.
gl_packages=(libgl1-mesa-dri libegl-mesa0 libglx-mesa0 libglapi-mesa)
export DEBIAN_FRONTEND=noninteractive

if [ "$codename" = "bookworm" ]; then
  list=/etc/apt/sources.list.d/calibseg-bookworm-backports.list
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # Read the Debian mirror this machine already uses (deb822 .sources or one-line format).
    uri=$(grep -hs -A3 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '/^URIs:/{u=$2} /^Suites:.*bookworm( |$)/{print u; exit}')
    if [ -z "$uri" ]; then
      uri=$(grep -hs -E '^deb\s+(\[[^]]*\]\s+)?\S+\s+bookworm\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | head -n1 | sed -E 's/^deb\s+(\[[^]]*\]\s+)?(\S+).*/\2/')
    fi
    if [ -z "$uri" ]; then log "cannot find this machine's Debian mirror in its apt sources"; exit 1; fi
    log "adding bookworm-backports from $uri"
    echo "deb $uri bookworm-backports main" | "${sudo_cmd[@]}" tee "$list" >/dev/null
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  log "installing ${packages[*]} from bookworm-backports"
  installed_gl=()
  for p in "${gl_packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && installed_gl+=("$p"); done
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends -t bookworm-backports "${packages[@]}" "${installed_gl[@]}" >/dev/null
else
  "${sudo_cmd[@]}" apt-get update -qq
  log "installing ${packages[*]}"
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

major=$(mesa_vulkan_major)
if [ "$major" -lt "$min_mesa_major" ]; then
  log "installed Mesa $major is older than $min_mesa_major: long shader loops would give wrong results"
  exit 1
fi
log "lavapipe from Mesa $major installed"
