#!/bin/sh
# Build a relocatable udocker engine bundle from the engines installed on this machine (Debian packages
# proot, runc, crun, patchelf, slirp4netns, libfakechroot), so that a site builds it once on a login node and installs it
# on compute nodes without internet with `udocker install --from=udocker-engines-<arch>.tar.gz`.
#
# usage: engines/build-bundle.sh [-o OUTDIR] [ENGINE...]     (ENGINE: proot runc crun patchelf slirp4netns fakechroot)
#
# Writes into OUTDIR: udocker-engines-<arch>/ (the tree), udocker-engines-<arch>.tar.gz and its .sha256, and the
# wheel udocker_engines-<version>-py3-none-<linux tags of arch>.whl (engines/make_wheel.py) for pip.
#
# Layout of the bundle:
#   bin/<engine>                     the executables
#   lib/<soname>                     every shared library they load, glibc and its loader included
#   lib/fakechroot/libfakechroot.so  the fakechroot library (LD_PRELOADed into containers, F modes)
#   manifest.yaml                    engines (version, source package), the loader, the sha256 of every file
#
# Self-contained: the C library and its dynamic loader (lib/ld-linux-*.so.*) travel with the engines, so they
# run on any Linux kernel the bundled glibc supports whatever C library the host has (an older glibc, musl,
# none) and whatever LD_LIBRARY_PATH a module set. `udocker install` sets each executable's ELF interpreter
# (PT_INTERP) to the installed loader and its DT_RPATH to the installed lib/, both absolute: the kernel then
# starts the engine through the bundled loader, /proc/self/exe stays the engine (runc re-executes itself from
# a memfd copy, which $ORIGIN could not follow), and DT_RPATH, unlike DT_RUNPATH, is searched before
# LD_LIBRARY_PATH, for the dependencies of dependencies too. In the tarball the executables keep Debian's
# interpreter and get DT_RPATH '$ORIGIN/../lib'; non-glibc libraries get '$ORIGIN'; glibc's files are copied
# untouched. libfakechroot.so is the exception: it is loaded by the container's glibc, so udocker checks its
# GLIBC_x needs against each container's libc (F modes).
#
# Needs: sh, coreutils, ldd, dpkg-query, patchelf, tar, gzip, python3. Downloads nothing.
set -eu

out=.
while getopts o:h opt; do
    case $opt in
        o) out=$OPTARG ;;
        *) sed -n '2,9p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- proot runc crun patchelf slirp4netns fakechroot

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
    esac
    return 1
}

# copy the libraries FILE needs (ldd resolves the whole closure, the loader included) into lib/; prints their
# bundle paths. With $2 = noglibc the C library is left out (libfakechroot uses the container's).
add_libraries() {
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1, $1 }' \
    | while read -r soname path; do
        soname=$(basename "$soname")
        if is_glibc "$soname" && [ "${2:-}" = noglibc ]; then continue; fi
        if [ ! -f "$bundle/lib/$soname" ]; then
            cp -L "$path" "$bundle/lib/$soname"
            chmod 0644 "$bundle/lib/$soname"
            is_glibc "$soname" || patchelf --force-rpath --set-rpath '$ORIGIN' "$bundle/lib/$soname"
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
            files="lib/fakechroot/libfakechroot.so $(add_libraries "$lib" noglibc | tr '\n' ' ')"
            ;;
        proot|runc|crun|patchelf|slirp4netns)
            exe=$(command -v "$engine" || true)
            [ -n "$exe" ] || exe=$(ls "/usr/sbin/$engine" "/sbin/$engine" 2>/dev/null | head -n 1)
            [ -n "$exe" ] || die "$engine is not installed (apt-get install $engine)"
            cp -L "$exe" "$bundle/bin/$engine"
            chmod 0755 "$bundle/bin/$engine"
            source=$(package_of "$exe")
            echo "bin/$engine $source" >> "$sources"
            files="bin/$engine $(add_libraries "$exe" | tr '\n' ' ')"
            patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$bundle/bin/$engine"
            ;;
        *) die "unknown engine '$engine' (known: proot runc crun patchelf slirp4netns fakechroot)" ;;
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

loader=
for exe in "$bundle"/bin/*; do
    interp=$(patchelf --print-interpreter "$exe" 2>/dev/null) || continue
    loader=lib/$(basename "$interp")
    [ -f "$bundle/$loader" ] || die "the loader $interp of $exe is not in the bundle"
    break
done
[ -n "$loader" ] || [ -z "$(ls "$bundle/bin")" ] || die "no dynamic executable in the bundle: nothing names the loader"
{
    echo "# udocker engine bundle: what each engine is, where it came from, the sha256 of every file."
    echo "# Written by engines/build-bundle.sh; checked by 'udocker install --from'."
    echo "format: 1"
    echo "architecture: $arch"
    echo "machine: $(uname -m)"
    [ -z "$loader" ] || echo "loader: $loader"
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
(cd "$out" && sha256sum "$name.tar.gz") > "$bundle.tar.gz.sha256"
python3 "$(dirname "$0")/make_wheel.py" "$bundle" "$out" >/dev/null || die "cannot write the wheel"
echo "$bundle.tar.gz"
