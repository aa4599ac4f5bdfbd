# Shared by .ci/run and .ci/venv: console helpers and the project virtualenv.
# Source it from the repository root.

VENV_DIR=.venv
VENV_PYTHON="$VENV_DIR/bin/python"
INSTALL_STAMP="$VENV_DIR/.ci-install-stamp"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    BOLD=$'\e[1m' GREEN=$'\e[32m' RED=$'\e[31m' YELLOW=$'\e[33m' RESET=$'\e[0m'
else
    BOLD='' GREEN='' RED='' YELLOW='' RESET=''
fi

step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '%swarning:%s %s\n' "$YELLOW" "$RESET" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$RED" "$RESET" "$*" >&2
    exit 1
}

# Milliseconds since the epoch; EPOCHREALTIME needs bash 5, else whole seconds.
now_ms() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then
        local micros="${EPOCHREALTIME/[.,]/}"
        echo $((10#$micros / 1000))
    else
        echo $(($(date +%s) * 1000))
    fi
}
format_ms() { printf '%d.%01ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }

# True if "$1" runs and is at least Python $2.$3. Some machines have pyenv shims
# (e.g. python3.12) that exist on PATH but fail when run, so actually run it.
python_at_least() {
    command -v "$1" >/dev/null 2>&1 &&
        "$1" -c "import sys; assert sys.version_info >= ($2, $3)" >/dev/null 2>&1
}

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        python_at_least "$PYTHON" 3 11 || die "PYTHON=$PYTHON does not run or is older than 3.11"
        echo "$PYTHON"
        return
    fi
    local candidate
    for candidate in python3.13 python3.12 python3; do
        if python_at_least "$candidate" 3 12; then
            echo "$candidate"
            return
        fi
    done
    for candidate in python3 python3.11; do
        if python_at_least "$candidate" 3 11; then
            echo "$candidate"
            return
        fi
    done
    die "no working Python >= 3.11 found (tried python3.13, python3.12, python3, python3.11)"
}

python_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }

create_venv() {
    local python="$1"
    if "$python" -m venv "$VENV_DIR" >/dev/null 2>&1; then
        return
    fi
    # Debian ships venv without ensurepip unless python3-venv is installed:
    # create the venv bare and let the system pip install pip into it.
    warn "'$python -m venv' failed (no ensurepip?); bootstrapping pip with the system pip"
    rm -rf "$VENV_DIR"
    "$python" -m venv --without-pip "$VENV_DIR" ||
        die "could not create $VENV_DIR with $python"
    if ! "$python" -m pip --python "$VENV_PYTHON" install --quiet pip; then
        rm -rf "$VENV_DIR"
        die "could not install pip into $VENV_DIR; on Debian/Ubuntu run: apt-get install python3-venv"
    fi
}

# ensure_venv EXTRAS: create .venv with the best Python available (>= 3.11, 3.12+
# preferred: it gets mitmproxy 12) and install the project with those extras.
ensure_venv() {
    local extras="$1"
    step "Python environment"
    if [[ -x "$VENV_PYTHON" ]] && python_at_least "$VENV_PYTHON" 3 11; then
        note "using existing $VENV_DIR (Python $(python_version "$VENV_PYTHON"))"
    else
        if [[ -e "$VENV_DIR" ]]; then
            warn "$VENV_DIR exists but its Python does not run; recreating it"
            rm -rf "$VENV_DIR"
        fi
        BASE_PYTHON=$(pick_python)
        note "creating $VENV_DIR with $(command -v "$BASE_PYTHON") (Python $(python_version "$BASE_PYTHON"))"
        create_venv "$BASE_PYTHON"
        # An old bundled pip may not do editable installs of pyproject-only projects.
        "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade pip \
            >"$VENV_DIR/ci-pip-upgrade.log" 2>&1 || warn "could not upgrade pip; trying with $("$VENV_PYTHON" -m pip --version)"
    fi

    # Reinstall only when the dependencies may have changed (always on CI).
    wanted_stamp="$extras $(python_version "$VENV_PYTHON") $(cksum <pyproject.toml)"
    if [[ "${CI:-}" == "true" || ! -f "$INSTALL_STAMP" || "$(cat "$INSTALL_STAMP")" != "$wanted_stamp" ]]; then
        note "installing the project with its [$extras] extras (pip install -e '.[$extras]')"
        install_start=$(now_ms)
        # Build-backend warnings are noise on success: keep them in a log instead.
        install_log="$VENV_DIR/ci-install.log"
        if ! "$VENV_PYTHON" -m pip install --disable-pip-version-check -e ".[$extras]" >"$install_log" 2>&1; then
            tail -n 60 "$install_log" >&2
            die "pip install failed (full log: $install_log)"
        fi
        echo "$wanted_stamp" >"$INSTALL_STAMP"
        note "installed in $(format_ms $(($(now_ms) - install_start)))"
    else
        note "dependencies up to date (pyproject.toml unchanged)"
    fi
}

# On CI only (never on a developer's machine): Debian's nftables and iproute2 for
# the transparent-mode test, which needs root and a network namespace. Best
# effort: without them that test is skipped and says why.
ensure_ci_system_tools() {
    [[ "${CI:-}" == "true" ]] || return 0
    command -v nft >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        note "no root or apt-get: the transparent-mode test will be skipped"
        return 0
    fi
    step "System tools for the transparent-mode test (apt-get install nftables iproute2)"
    local log="$VENV_DIR/ci-apt.log"
    if { timeout 300 apt-get update && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends nftables iproute2; } >"$log" 2>&1; then
        note "installed"
    else
        warn "could not install nftables/iproute2 (log: $log); the transparent-mode test will be skipped"
    fi
}
