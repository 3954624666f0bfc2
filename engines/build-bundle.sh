#!/bin/sh
# Build a relocatable udocker engine bundle from the engines installed on this machine (Debian packages
# proot, runc, crun, patchelf, libfakechroot), so that a site builds it once on a login node and installs it
# on compute nodes without internet with `udocker install --from=udocker-engines-<arch>.tar.gz`.
#
# usage: engines/build-bundle.sh [-o OUTDIR] [ENGINE...]     (ENGINE: proot runc crun patchelf fakechroot)
#
# Layout of the bundle (OUTDIR/udocker-engines-<arch>/ and the same tree in OUTDIR/udocker-engines-<arch>.tar.gz):
#   bin/<engine>                     the executables
#   lib/<soname>                     the shared libraries they need that are not part of glibc
#   lib/fakechroot/libfakechroot.so  the fakechroot library (LD_PRELOADed into containers, F modes)
#   manifest.yaml                    engines (version, source package), and the sha256 of every file
#
# Relocation: every executable gets DT_RPATH '$ORIGIN/../lib' and every bundled library DT_RPATH '$ORIGIN'
# (patchelf --force-rpath). DT_RPATH, unlike DT_RUNPATH, is searched before LD_LIBRARY_PATH and also for
# the dependencies of dependencies, so a module's LD_LIBRARY_PATH on an HPC node cannot swap in another
# libtalloc, and the bundle works from any directory with LD_LIBRARY_PATH unset.
# Exception: runc and crun re-execute themselves from a memfd copy (CVE-2019-5736 defence), where $ORIGIN
# no longer names bin/; `udocker install` therefore appends the installed engines/lib as an absolute path to
# their RPATH and records their new sums in engines/patched.json (manifest.yaml keeps the bundle's sums).
#
# glibc is NOT bundled (libc, libm, libpthread, libdl, librt, libresolv, libutil, the loader): its libraries
# must match the host's loader and kernel interface, and running engines through a bundled loader
# (ld.so BINARY) breaks engines that re-execute /proc/self/exe (runc init, crun) or that exec through a
# loader of their own (proot). The bundle therefore needs a host glibc at least as new as the newest
# GLIBC_x.y symbol version its files use: manifest.yaml records it as glibc_min, and udocker install checks
# it. Build on the oldest distribution of your site to widen the range.
#
# Needs: sh, coreutils, ldd, dpkg-query, patchelf, tar, gzip. Downloads nothing.
set -eu

out=.
while getopts o:h opt; do
    case $opt in
        o) out=$OPTARG ;;
        *) sed -n '2,9p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- proot runc crun patchelf fakechroot

die() { echo "build-bundle: $*" >&2; exit 1; }
command -v patchelf >/dev/null || die "patchelf is needed to make the bundle relocatable"
command -v dpkg-query >/dev/null || die "dpkg-query is needed to record where each file comes from"

arch=$(dpkg --print-architecture)
name=udocker-engines-$arch
mkdir -p "$out"
out=$(cd "$out" && pwd)
bundle=$out/$name
rm -rf "$bundle" "$bundle.tar.gz"
mkdir -p "$bundle/bin" "$bundle/lib"
sources=$(mktemp)
trap 'rm -f "$sources" "$sources.engines"' EXIT

# "package version" of the Debian package owning a file (paths are looked up as dpkg recorded them: with
# merged /usr, /lib/x/libfoo.so.1 is a symlink whose target dpkg knows under /usr/lib).
package_of() {
    real=$(readlink -f "$1")
    pkg=$(dpkg-query -S "$real" 2>/dev/null || dpkg-query -S "${real#/usr}" 2>/dev/null) \
        || die "no Debian package owns $1"
    pkg=${pkg%%: *}
    echo "${pkg%%:*} $(dpkg-query -W -f '${Version}' "$pkg")"
}

is_glibc() {
    case $(basename "$1") in
        ld-linux*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|libutil.so.*) return 0 ;;
        linux-vdso.so.*|linux-gate.so.*) return 0 ;;
    esac
    return 1
}

# copy the libraries FILE needs (ldd resolves the whole closure) into lib/; prints their bundle paths
add_libraries() {
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r soname path; do
        is_glibc "$soname" && continue
        if [ ! -f "$bundle/lib/$soname" ]; then
            cp -L "$path" "$bundle/lib/$soname"
            chmod 0644 "$bundle/lib/$soname"
            patchelf --force-rpath --set-rpath '$ORIGIN' "$bundle/lib/$soname"
            echo "lib/$soname $(package_of "$path")" >> "$sources"
        fi
        echo "lib/$soname"
    done
}

add_engine() {
    engine=$1
    case $engine in
        fakechroot)
            lib=$(dpkg-query -L libfakechroot 2>/dev/null | grep '/libfakechroot\.so$' | head -n 1) \
                || die "libfakechroot is not installed (apt-get install libfakechroot)"
            mkdir -p "$bundle/lib/fakechroot"
            cp -L "$lib" "$bundle/lib/fakechroot/libfakechroot.so"
            chmod 0644 "$bundle/lib/fakechroot/libfakechroot.so"
            source=$(package_of "$lib")
            echo "lib/fakechroot/libfakechroot.so $source" >> "$sources"
            files="lib/fakechroot/libfakechroot.so $(add_libraries "$lib" | tr '\n' ' ')"
            ;;
        proot|runc|crun|patchelf)
            exe=$(command -v "$engine" || true)
            [ -n "$exe" ] || exe=$(ls "/usr/sbin/$engine" "/sbin/$engine" 2>/dev/null | head -n 1)
            [ -n "$exe" ] || die "$engine is not installed (apt-get install $engine)"
            cp -L "$exe" "$bundle/bin/$engine"
            chmod 0755 "$bundle/bin/$engine"
            source=$(package_of "$exe")
            echo "bin/$engine $source" >> "$sources"
            files="bin/$engine $(add_libraries "$exe" | tr '\n' ' ')"
            if [ "${files#* lib/}" != "$files" ]; then
                patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$bundle/bin/$engine"
            fi
            ;;
        *) die "unknown engine '$engine' (known: proot runc crun patchelf fakechroot)" ;;
    esac
    # upstream version: drop the epoch and the Debian revision
    version=$(echo "${source#* }" | sed 's/^[0-9]*://; s/-[^-]*$//')
    printf '  %s:\n    version: "%s"\n    source: %s\n    files: [%s]\n' "$engine" "$version" "$source" \
        "$(echo $files | tr ' ' '\n' | sort -u | paste -sd, - | sed 's/,/, /g')" >> "$sources.engines"
}

: > "$sources.engines"
for engine in "$@"; do
    add_engine "$engine"
done

glibc_min=$(cat "$bundle"/bin/* $(find "$bundle/lib" -type f) | grep -ao 'GLIBC_2\.[0-9.]*[0-9]' \
    | sed 's/GLIBC_//' | sort -u -V | tail -n 1)
{
    echo "# udocker engine bundle: what each engine is, where it came from, the sha256 of every file."
    echo "# Written by engines/build-bundle.sh; checked by 'udocker install --from'."
    echo "format: 1"
    echo "architecture: $arch"
    echo "machine: $(uname -m)"
    echo "glibc_min: \"$glibc_min\""
    echo "engines:"
    cat "$sources.engines"
    echo "files:"
    sort "$sources" | while read -r file package version; do
        printf '  %s:\n    sha256: %s\n    source: %s %s\n' "$file" \
            "$(sha256sum "$bundle/$file" | cut -d' ' -f1)" "$package" "$version"
    done
} > "$bundle/manifest.yaml"

# a reproducible tarball: sorted names, no owners, no times
tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - "$name" | gzip -n > "$bundle.tar.gz"
echo "$bundle.tar.gz"
