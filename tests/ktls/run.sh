#!/usr/bin/env bash
# The kTLS test bed (docs/ktls.md): boots two Debian kernels under QEMU
# (software emulation) and runs the in-guest checks of tests/ktls/guest on
# each — a real TLS 1.3 session handed to kernel TLS on a socket enrolled in
# an sk_msg program's socket map.
#
#   Debian 6.1.187 (linux-6.1.0-53-amd64): kTLS on an enrolled socket works
#   Debian 6.1.192 (linux-6.1.0-56-amd64): TLS_TX on it fails with EINVAL
#
# Usage: tests/ktls/run.sh            (root: apt-get installs QEMU if missing)
# Environment: L7C_TESTBED (default ../shared/testbed beside the repository),
#   L7C_KTLS_TIMEOUT (seconds per boot, default 150), CARGO_TARGET_DIR;
#   L7C_KTLS_ONLY (boot only this kernel folder, for investigating).
#
# Exit status: 0 only when every check passed on both kernels; 1 when a
# check failed, a result is missing or a boot timed out; 3 when nothing
# failed but some checks were SKIPPED (printed with their reason, e.g. the
# policy checks while `l7c compile` refuses the example policy); 2 when the
# bed cannot be set up.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
testbed="${L7C_TESTBED:-$root/../shared/testbed}"
boot_timeout="${L7C_KTLS_TIMEOUT:-150}"
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/ktls-guest}"
started=$SECONDS

# folder, Debian version, what the kernel must do with kTLS on an enrolled socket
kernels=(
  "linux-6.1.0-53-amd64 6.1.187-1 accepts"
  "linux-6.1.0-56-amd64 6.1.192-2 refuses"
)

say() { printf '== %s\n' "$*"; }
die() { printf 'ktls: %s\n' "$*" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/l7c-ktls.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- tools
need_install=()
command -v qemu-system-x86_64 >/dev/null || need_install+=(qemu-system-x86)
busybox_static() { file -L "$1" 2>/dev/null | grep -q 'statically linked' || ldd "$1" 2>&1 | grep -q 'not a dynamic'; }
busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || ! busybox_static "$busybox"; then need_install+=(busybox-static); fi
command -v cpio >/dev/null || need_install+=(cpio)
if [ ${#need_install[@]} -gt 0 ]; then
  say "installing ${need_install[*]}"
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "needs ${need_install[*]} (root and apt-get to install them)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq --no-install-recommends "${need_install[@]}" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_install[@]}"; }; } >/dev/null ||
    die "apt-get could not install ${need_install[*]}"
  busybox="$(command -v busybox)"
fi
busybox_static "$busybox" || die "$busybox is not statically linked (install busybox-static)"

# ------------------------------------------------------------- kernels
# Fills $work/<folder>/ with vmlinuz and modules/ (+ order): from the cache
# of the test bed, or from the Debian package when the cache is absent.
fetch_kernel() {
  local folder="$1" version="$2" dest="$work/$folder"
  mkdir -p "$dest/modules"
  if [ -f "$testbed/$folder/vmlinuz-${folder#linux-}" ] && [ -f "$testbed/$folder/modules/order" ]; then
    cp "$testbed/$folder/vmlinuz-${folder#linux-}" "$dest/vmlinuz"
    cp "$testbed/$folder/modules/"* "$dest/modules/"
    echo "kernel: $testbed/$folder (cached)"
    return
  fi
  local package="linux-image-${folder#linux-}-unsigned"
  echo "no cached kernel in $testbed/$folder: downloading $package=$version"
  download() { apt-get download "$package=$version" || apt-get download "linux-image-${folder#linux-}=$version"; }
  ( cd "$dest" && { download || { apt-get update -qq && download; }; } ) >/dev/null 2>&1 ||
    die "no cached kernel in $testbed/$folder and apt-get cannot download $package=$version (the Debian archive drops old builds)"
  dpkg-deb -x "$dest"/*.deb "$dest/pkg" || die "cannot unpack the $package package"
  cp "$dest"/pkg/boot/vmlinuz-* "$dest/vmlinuz"
  local order=(tls ctr gcm gf128mul ghash-generic cryptd crypto_simd aesni-intel ghash-clmulni-intel)
  : >"$dest/modules/order"
  for name in "${order[@]}"; do
    local found
    found="$(find "$dest/pkg/lib/modules" -name "$name.ko*" | head -1)"
    [ -n "$found" ] || continue  # built into this kernel
    case "$found" in
      *.xz) xz -dc "$found" >"$dest/modules/$name.ko" ;;
      *.zst) zstd -qdc "$found" >"$dest/modules/$name.ko" ;;
      *) cp "$found" "$dest/modules/$name.ko" ;;
    esac
    echo "$name.ko" >>"$dest/modules/order"
  done
  echo "kernel: $package $version (downloaded)"
}

# ------------------------------------------------------ the guest binary
say "building the in-guest checks (tests/ktls/guest, static, profile guest)"
build_started=$SECONDS
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --profile guest --locked \
  --manifest-path "$here/guest/Cargo.toml" --target "$target" || die "building tests/ktls/guest failed"
guest="$CARGO_TARGET_DIR/$target/guest/l7c-ktls-guest"
[ -x "$guest" ] || die "no binary at $guest"
echo "built in $((SECONDS - build_started)) s: $guest"

# ------------------------------------------------------------ initramfs
make_initramfs() {
  local kernel_dir="$1" out="$2" tree="$1/initramfs"
  mkdir -p "$tree"/{bin,dev,proc,sys,modules,tmp}
  cp "$busybox" "$tree/bin/busybox"
  for tool in sh mount mkdir cat insmod ip poweroff sleep uname; do ln -sf busybox "$tree/bin/$tool"; done
  cp "$kernel_dir/modules/"* "$tree/modules/"
  cp "$guest" "$tree/l7c-ktls-guest"
  cat >"$tree/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
for module in $(cat /modules/order); do
  insmod "/modules/$module" || echo "L7C-KTLS-MODULE-FAILED $module"
done
ip link set lo up
echo "L7C-KTLS-BEGIN modules: $(cat /proc/modules | while read name rest; do printf '%s ' "$name"; done)"
/l7c-ktls-guest
echo "L7C-KTLS-EXIT status=$?"
poweroff -f
EOF
  chmod +x "$tree/init"
  ( cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1 ) >"$out"
}

# ----------------------------------------------------------------- boots
# Both guests boot at once (each on its own emulated CPUs); their consoles
# are read and reported in order once both have powered off.
selected=()
for entry in "${kernels[@]}"; do
  read -r folder version expect <<<"$entry"
  [ -z "${L7C_KTLS_ONLY:-}" ] || [ "$L7C_KTLS_ONLY" = "$folder" ] || continue
  selected+=("$entry")
  fetch_kernel "$folder" "$version"
  make_initramfs "$work/$folder" "$work/$folder/initrd.cpio.gz"
done
[ ${#selected[@]} -gt 0 ] || die "L7C_KTLS_ONLY=${L7C_KTLS_ONLY:-} names no kernel of this bed"

boot() {
  local folder="$1" expect="$2" started=$SECONDS
  timeout "$boot_timeout" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1G \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$work/$folder/vmlinuz" -initrd "$work/$folder/initrd.cpio.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off l7c.expect=$expect" \
    </dev/null >"$work/$folder/console.log" 2>&1
  echo "$? $((SECONDS - started))" >"$work/$folder/qemu.status"
}
say "booting ${#selected[@]} kernel(s) under QEMU (TCG), at most ${boot_timeout} s each"
for entry in "${selected[@]}"; do
  read -r folder version expect <<<"$entry"
  boot "$folder" "$expect" &
done
wait

overall=0
summaries=()
for entry in "${selected[@]}"; do
  read -r folder version expect <<<"$entry"
  say "Debian $version ($folder): it must ${expect%s} kTLS on an enrolled socket"
  log="$work/$folder/console.log"
  read -r qemu_status elapsed <"$work/$folder/qemu.status"
  tr -d '\r' <"$log" >"$log.txt"
  grep -E '^(L7C-KTLS-(BEGIN|MODULE-FAILED)|kTLS test bed|PASS |FAIL |SKIPPED |L7C-KTLS-SUMMARY|L7C-KTLS-EXIT)' "$log.txt"
  status="$(sed -n 's/^L7C-KTLS-EXIT status=\([0-9]*\).*/\1/p' "$log.txt" | tail -1)"
  summary="$(grep '^L7C-KTLS-SUMMARY' "$log.txt" | tail -1)"
  if [ "$qemu_status" = 124 ]; then
    echo "FAIL    $folder: no result after ${boot_timeout} s (time-out); console tail:"
    tail -20 "$log.txt"
    summaries+=("Debian $version: TIME-OUT after ${boot_timeout} s"); overall=1; continue
  fi
  if [ -z "$status" ] || [ -z "$summary" ]; then
    echo "FAIL    $folder: the guest printed no result (qemu exit $qemu_status); console tail:"
    tail -30 "$log.txt"
    summaries+=("Debian $version: NO RESULT"); overall=1; continue
  fi
  if grep -q '^L7C-KTLS-MODULE-FAILED' "$log.txt"; then status=1; fi
  summaries+=("Debian $version: ${summary#L7C-KTLS-SUMMARY } (guest exit $status, ${elapsed} s)")
  skipped_names="$(sed -n 's/^SKIPPED *\([^:]*\):.*/\1/p' "$log.txt" | paste -sd, - | sed 's/,/, /g')"
  [ -z "$skipped_names" ] || summaries+=("  SKIPPED, not passed: $skipped_names")
  case "$status" in
    0) ;;
    3) [ "$overall" = 1 ] || overall=3 ;;
    *) overall=1 ;;
  esac
done

say "kTLS test bed summary ($((SECONDS - started)) s)"
printf '%s\n' "${summaries[@]}"
case "$overall" in
  0) echo "every check passed on both kernels" ;;
  3) echo "NOT A PASS: nothing failed, but checks were SKIPPED (see their reasons above)" ;;
  *) echo "FAILED" ;;
esac
count() { cat "$work"/*/console.log.txt 2>/dev/null | grep -c "^$1 " || true; }
echo "ktls: $(count PASS) passed, $(( $(count FAIL) + (overall == 1 && $(count FAIL) == 0 ? 1 : 0) )) failed, $(count SKIPPED) skipped"
exit "$overall"
