#!/usr/bin/env bash
# Install twilight-agent on a Docker host as a systemd service. Idempotent: every step
# compares what is there with what it would put there, does nothing when they match and
# says "unchanged", so a second run changes nothing. See --help.
set -euo pipefail
umask 022  # what it installs is readable as intended, whatever the caller's umask

NAME=twilight-agent
USER_NAME=twilight-agent
PREFIX=/opt/twilight-agent
VENV=$PREFIX/venv
STAMP=$PREFIX/installed-from
CONF_DIR=/etc/twilight-agent
CONF=$CONF_DIR/agent.env
TOKEN=$CONF_DIR/registry-token
PROMOTE_TOKEN=$CONF_DIR/promote-token
PROMOTE_TOKEN_FILE=""
NOTIFY_URLS=$CONF_DIR/notify-urls
NOTIFY_FILE=""
STATE_DIR=/var/lib/twilight-agent
UNIT_DEST=/etc/systemd/system/$NAME.service
SERVICE=$NAME  # the unit systemctl acts on: twilight-agent, or twilight-agent@NAME
INSTANCE=""
ENV_FILE=""
LINK=/usr/local/bin/$NAME
SOCKET=/var/run/docker.sock
OWN_GROUP=twilight-docker  # created only when no group owns the socket's gid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
UNIT_SRC=$REPO/systemd/$NAME.service
ENV_EXAMPLE=$HERE/agent.env.example
REQUIREMENTS=$HERE/requirements.txt  # every dependency pinned with its sha256 hashes
KEYLESS_REQUIREMENTS=$HERE/requirements-keyless.txt  # sigstore and what it adds, hashed
KEYLESS=0  # 1: install the keyless lock too (--keyless, the config, or an earlier run)

usage() {
  cat <<EOF
Usage: install.sh [SOURCE] [--instance NAME] [--token-file FILE] [--env-file PATH]
                  [--promote-token-file FILE] [--notify-file FILE] [--keyless]
       install.sh --uninstall [--instance NAME]
       install.sh --help

Installs twilight-agent on this host, as root:
  - system user $USER_NAME, member of the group that owns $SOCKET
    (whatever its name; a group '$OWN_GROUP' is created with that gid if none has it)
  - a virtualenv in $VENV with the package, and $LINK for operators; its dependencies
    come from deploy/requirements.txt, every one pinned to a version and checked against
    its sha256 hashes (pip --require-hashes): a tampered or substituted file is refused
  - the unit $UNIT_DEST (from systemd/$NAME.service of this repository)
  - $CONF from deploy/agent.env.example, only if it does not exist: an operator's
    configuration is never overwritten
  - the registry token from --token-file as $TOKEN (root, 0600), which the unit hands
    to the agent as the systemd credential 'registry-token'; an empty file (anonymous
    pulls) when no token was ever given
  - systemctl daemon-reload (when the unit changed) and systemctl enable --now $NAME;
    a running agent is restarted when its package, unit, token or groups changed

SOURCE is a wheel, a source directory, or a package requirement (e.g. '$NAME==0.1.0');
default: the repository this script is in.

Running it again changes nothing ("unchanged" for every step) unless something differs.

Options:
  --instance NAME    one of several apps on this host: the template unit
                     twilight-agent@.service, config $CONF_DIR/NAME.env, token
                     $CONF_DIR/NAME.registry-token, state $STATE_DIR/NAME, and
                     systemctl enable --now twilight-agent@NAME. The package, the user and
                     the command are shared by every instance.
  --token-file FILE  registry token (e.g. a GitHub PAT with read:packages); with a
                     registry user, set TWILIGHT_REGISTRY_USERNAME in $CONF
  --env-file PATH    the compose .env the agent rewrites (TWILIGHT_ENV_FILE): the file
                     and its directory get group $USER_NAME with write access, and
                     a unit drop-in ReadWritePaths= lets the hardened unit write there
  --promote-token-file FILE
                     a canary host (TWILIGHT_PROMOTE_TO): a registry token that may push,
                     as $PROMOTE_TOKEN (root, 0600), handed to the agent as the
                     credential 'promote-token' by a unit drop-in LoadCredential=
  --notify-file FILE Apprise notification URLs, one a line (they often hold a token or
                     a password), as $NOTIFY_URLS (root, 0600), handed to the agent
                     as the credential 'notify-urls' by a unit drop-in LoadCredential=
  --keyless          keyless verification (TWILIGHT_VERIFY_IDENTITY): also install
                     sigstore and its dependencies from deploy/requirements-keyless.txt,
                     hashed like the main lock. Implied when the config already sets
                     TWILIGHT_VERIFY_IDENTITY, and kept by later runs once installed
  --uninstall        stop and disable the service; remove the unit, $PREFIX, $LINK
                     and the user. Keeps $CONF_DIR (config and token) and
                     $STATE_DIR (history, quarantine). With --instance: stop and
                     disable that app only; everything shared stays.
  -h, --help         this text

Examples:
  sudo deploy/install.sh --token-file ~/ghcr-token
  sudo deploy/install.sh dist/twilight_agent-0.1.0-py3-none-any.whl
  sudo deploy/install.sh --instance api --token-file ~/ghcr-token
  sudo deploy/install.sh --keyless
  sudo deploy/install.sh --uninstall
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
WORK_DIR=""  # a temporary directory of this run, removed however the run ends
cleanup() { if [ -n "$WORK_DIR" ]; then rm -rf "$WORK_DIR"; fi; }
trap cleanup EXIT
say() { printf '%-28s %s\n' "$1:" "$2"; }

CHANGES=0
RESTART=0
changed() { say "$1" "$2"; CHANGES=$((CHANGES + 1)); }
unchanged() { say "$1" "unchanged${2:+ ($2)}"; }
systemd_running() { [ -d /run/systemd/system ]; }

# -- small helpers ------------------------------------------------------------------------
# put_file SRC DEST MODE OWNER GROUP LABEL: install SRC as DEST unless content, mode and
# owner already match. Returns 0 when it wrote, 1 when nothing had to be done.
put_file() {
  local src=$1 dest=$2 mode=$3 owner=$4 group=$5 label=$6
  if [ -f "$dest" ] && cmp -s "$src" "$dest" \
      && [ "$(stat -c '%a %U %G' "$dest")" = "${mode#0} $owner $group" ]; then
    unchanged "$label"
    return 1
  fi
  local verb=installed
  [ -e "$dest" ] && verb=updated
  install -m "$mode" -o "$owner" -g "$group" "$src" "$dest"
  changed "$label" "$verb $dest"
  return 0
}

# The files of a source directory that make the package (built from a copy of just these,
# so the clone gets no build/ or egg-info litter).
SOURCE_FILES=(pyproject.toml README.md LICENSE twilight_agent)

source_files() {
  local f
  for f in "${SOURCE_FILES[@]}"; do
    if [ -e "$1/$f" ]; then printf '%s\n' "$f"; fi
  done
}

# A fingerprint of what SOURCE would install, to tell whether the venv already has it.
fingerprint() {
  local src=$1 sum files=() reqs
  reqs=$(sha256sum "$REQUIREMENTS")
  printf 'requirements:%s ' "${reqs%% *}"  # a new lock file reinstalls too
  if [ "$KEYLESS" = 1 ]; then
    reqs=$(sha256sum "$KEYLESS_REQUIREMENTS")
    printf 'keyless:%s ' "${reqs%% *}"
  fi
  if [ -d "$src" ]; then
    [ -f "$src/pyproject.toml" ] || die "$src has no pyproject.toml"
    mapfile -t files < <(source_files "$src")
    sum=$(cd "$src" && find "${files[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum)
    echo "dir:$src:${sum%% *}"
  elif [ -f "$src" ]; then
    sum=$(sha256sum "$src")
    echo "file:$src:${sum%% *}"
  else
    echo "requirement:$src"
  fi
}

# -- install steps ------------------------------------------------------------------------
step_user() {
  if getent passwd "$USER_NAME" >/dev/null; then
    unchanged "user $USER_NAME"
  else
    useradd --system --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "twilight-agent deploy agent" "$USER_NAME"
    changed "user $USER_NAME" "created (system user)"
  fi
}

step_docker_group() {
  [ -S "$SOCKET" ] || die "no Docker socket at $SOCKET: install and start Docker first"
  local gid group
  gid=$(stat -c %g "$SOCKET")
  [ "$gid" != 0 ] || die "$SOCKET belongs to group root: give it a docker group first"
  group=$(getent group "$gid" | cut -d: -f1 || true)
  if [ -z "$group" ]; then
    groupadd --system --gid "$gid" "$OWN_GROUP"
    group=$OWN_GROUP
    changed "group of $SOCKET" "created $group (gid $gid)"
  fi
  if id -nG "$USER_NAME" | tr ' ' '\n' | grep -qxF "$group"; then
    unchanged "$USER_NAME in $group" "gid $gid owns $SOCKET"
  else
    usermod -a -G "$group" "$USER_NAME"
    changed "$USER_NAME in $group" "added (gid $gid owns $SOCKET)"
    RESTART=1
  fi
}

step_venv() {
  if [ -x "$VENV/bin/python" ]; then
    unchanged "virtualenv $VENV"
  else
    install -d -m 0755 "$PREFIX"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    changed "virtualenv $VENV" "created"
  fi
}

PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

step_package() {
  local src=$1 fp tmp wheel out files=()
  [ -f "$REQUIREMENTS" ] || die "$REQUIREMENTS not found (run install.sh from a clone)"
  fp=$(fingerprint "$src")
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fp" ] \
      && "$VENV/bin/$NAME" --version >/dev/null 2>&1; then
    unchanged "package" "$("$VENV/bin/$NAME" --version)"
    return
  fi
  install_requirements
  if [ -d "$src" ]; then
    tmp=$(mktemp -d)
    WORK_DIR=$tmp
    mkdir "$tmp/src" "$tmp/dist"
    mapfile -t files < <(source_files "$src")
    (cd "$src" && cp -r "${files[@]}" "$tmp/src/")
    find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
    if ! out=$("$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        -w "$tmp/dist" "$tmp/src" 2>&1); then
      printf '%s\n' "$out" >&2
      die "building a wheel from $src failed"
    fi
    wheel=$(find "$tmp/dist" -name '*.whl' | head -n 1)
    install_wheel "$wheel"
    rm -rf "$tmp"
  elif [ -f "$src" ]; then
    install_wheel "$src"
  else
    "${PIP[@]}" --no-deps --upgrade "$src"
  fi
  printf '%s\n' "$fp" >"$STAMP"
  changed "package" "installed $("$VENV/bin/$NAME" --version) from $src"
  RESTART=1
}

install_wheel() {
  "${PIP[@]}" --no-deps --force-reinstall "$1"  # this build, even at the same version
}

# The dependencies exactly as pinned, each file checked against its hashes; with
# keyless verification, the keyless lock in the same run (it pins only what the main
# lock does not).
install_requirements() {
  local locks=(-r "$REQUIREMENTS")
  if [ "$KEYLESS" = 1 ]; then
    locks+=(-r "$KEYLESS_REQUIREMENTS")
  fi
  "${PIP[@]}" --require-hashes --only-binary=:all: "${locks[@]}" \
    || die "installing the pinned dependencies from ${locks[*]} failed (see above)"
}

# want_keyless: sigstore goes in with --keyless, when the config already asks for keyless
# verification (the agent refuses to start without it), or when an earlier run put it in.
want_keyless() {
  local set="^[[:space:]]*(export[[:space:]]+)?TWILIGHT_VERIFY_IDENTITY=[\"']?[^\"'[:space:]#]"
  if [ "$KEYLESS" != 1 ] && [ -f "$CONF" ] && grep -Eq "$set" "$CONF"; then
    KEYLESS=1
    say "keyless verification" "TWILIGHT_VERIFY_IDENTITY is set in $CONF"
  fi
  if [ "$KEYLESS" != 1 ] && [ -f "$STAMP" ] && grep -q 'keyless:' "$STAMP"; then
    KEYLESS=1
  fi
  if [ "$KEYLESS" = 1 ] && [ ! -f "$KEYLESS_REQUIREMENTS" ]; then
    die "$KEYLESS_REQUIREMENTS not found (run install.sh from a clone)"
  fi
}

step_link() {
  if [ "$(readlink "$LINK" 2>/dev/null || true)" = "$VENV/bin/$NAME" ]; then
    unchanged "command $LINK"
  else
    [ ! -e "$LINK" ] || [ -L "$LINK" ] || die "$LINK exists and is not our symlink"
    ln -sfn "$VENV/bin/$NAME" "$LINK"
    changed "command $LINK" "linked to $VENV/bin/$NAME"
  fi
}

step_unit() {
  [ -f "$UNIT_SRC" ] || die "unit file $UNIT_SRC not found (run from a clone)"
  if put_file "$UNIT_SRC" "$UNIT_DEST" 0644 root root "unit $UNIT_DEST"; then
    UNIT_CHANGED=1
    RESTART=1
  fi
}

step_config() {
  if [ ! -d "$CONF_DIR" ]; then
    install -d -m 0755 -o root -g root "$CONF_DIR"
    changed "directory $CONF_DIR" "created"
  elif [ -L "$CONF_DIR" ] || [ "$(stat -c %U "$CONF_DIR")" != root ] \
      || [ $(( 0$(stat -c %a "$CONF_DIR") & 022 )) -ne 0 ]; then
    die "$CONF_DIR must be a directory owned by root and writable by root only" \
        "(it holds the agent's config and token): chown root:root $CONF_DIR;" \
        "chmod 755 $CONF_DIR"
  fi
  if [ -e "$CONF" ]; then
    if [ "$(stat -c %G "$CONF")" = "$USER_NAME" ]; then
      unchanged "config $CONF" "kept as it is: never overwritten"
    else  # e.g. after --uninstall and a reinstall: a new user, perhaps a new gid
      chgrp "$USER_NAME" "$CONF"
      chmod g+r "$CONF"
      changed "config $CONF" "kept; made readable by group $USER_NAME"
    fi
  else
    install -m 0640 -o root -g "$USER_NAME" "$ENV_EXAMPLE" "$CONF"
    changed "config $CONF" "created from agent.env.example: set TWILIGHT_IMAGE and the target"
  fi
}

step_token() {
  local token_file=$1
  if [ -n "$token_file" ]; then
    if put_file "$token_file" "$TOKEN" 0600 root root "registry token $TOKEN"; then
      RESTART=1
    fi
  elif [ -e "$TOKEN" ]; then
    unchanged "registry token $TOKEN" "kept"
  else
    # LoadCredential= needs the file to exist; empty means anonymous pulls.
    install -m 0600 -o root -g root /dev/null "$TOKEN"
    changed "registry token $TOKEN" "created empty: anonymous pulls (--token-file to set)"
  fi
}

step_systemd() {
  if ! systemd_running; then
    say "systemd" "not running here: skipped daemon-reload and enable --now"
    return
  fi
  if [ "$UNIT_CHANGED" = 1 ]; then
    systemctl daemon-reload
    changed "systemctl daemon-reload" "done"
  else
    unchanged "systemctl daemon-reload"
  fi
  if systemctl is-enabled --quiet "$SERVICE" && systemctl is-active --quiet "$SERVICE"; then
    if [ "$RESTART" = 1 ]; then
      systemctl restart "$SERVICE" || fail_start restart
      check_started restart
      changed "service $SERVICE" "restarted"
    else
      unchanged "service $SERVICE" "enabled, active"
    fi
  else
    systemctl enable --quiet --now "$SERVICE" || fail_start start
    check_started start
    changed "service $SERVICE" "enabled and started"
  fi
}

# Type=notify makes start/restart wait for READY; a unit that died at once shows as failed.
check_started() {
  if systemctl is-failed --quiet "$SERVICE"; then
    fail_start "$1"
  fi
}

fail_start() {
  echo "install.sh: $SERVICE failed to $1; see: journalctl -u $SERVICE -n 50" >&2
  exit 1
}

# -- uninstall ----------------------------------------------------------------------------
uninstall_instance() {
  if systemd_running && systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
    systemctl disable --quiet --now "$SERVICE" || true
    changed "service $SERVICE" "stopped, disabled"
  else
    unchanged "service $SERVICE" "not enabled"
  fi
  echo "kept: $CONF, its token, $STATE_DIR (history, quarantine) and what other"
  echo "      instances share (package, user, the template unit)"
}

uninstall() {
  if [ -f "$UNIT_DEST" ]; then
    if systemd_running; then
      systemctl disable --quiet --now "$NAME" || true
      rm -f "$UNIT_DEST"
      systemctl daemon-reload
    else
      rm -f "$UNIT_DEST"
    fi
    changed "unit $UNIT_DEST" "stopped, disabled, removed"
  else
    unchanged "unit $UNIT_DEST" "not installed"
  fi
  if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$VENV/bin/$NAME" ]; then
    rm -f "$LINK"
    changed "command $LINK" "removed"
  else
    unchanged "command $LINK" "not installed"
  fi
  if [ -d "$PREFIX" ]; then
    rm -rf "$PREFIX"
    changed "directory $PREFIX" "removed"
  else
    unchanged "directory $PREFIX" "not installed"
  fi
  if getent passwd "$USER_NAME" >/dev/null; then
    userdel "$USER_NAME"
    changed "user $USER_NAME" "removed"
  else
    unchanged "user $USER_NAME" "not present"
  fi
  if getent group "$OWN_GROUP" >/dev/null && [ -z "$(getent group "$OWN_GROUP" | cut -d: -f4)" ]; then
    groupdel "$OWN_GROUP"
    changed "group $OWN_GROUP" "removed"
  fi
  echo "kept: $CONF_DIR (config, registry token) and $STATE_DIR (history, quarantine);"
  echo "      remove them by hand to forget this host's deploys"
}

# use_instance NAME: the same steps for one of several apps (the template unit).
use_instance() {
  [[ $1 =~ ^[a-z0-9][a-z0-9_-]{0,62}$ ]] \
    || die "--instance '$1' is not an instance name (lowercase letters, digits, - and _)"
  SERVICE=$NAME@$1
  CONF=$CONF_DIR/$1.env
  TOKEN=$CONF_DIR/$1.registry-token
  PROMOTE_TOKEN=$CONF_DIR/$1.promote-token
  NOTIFY_URLS=$CONF_DIR/$1.notify-urls
  STATE_DIR=$STATE_DIR/$1
  UNIT_SRC=$REPO/systemd/$NAME@.service
  UNIT_DEST=/etc/systemd/system/$NAME@.service
}

# step_env_file: the agent must be able to replace the compose .env (a temp file in its
# directory, then a rename), and the unit's ProtectSystem=strict must allow it.
step_env_file() {
  [ -n "$ENV_FILE" ] || return 0
  local dir dropin
  if [ ! -f "$ENV_FILE" ] || [ -L "$ENV_FILE" ]; then
    die "--env-file $ENV_FILE is not a regular file"
  fi
  ENV_FILE=$(realpath "$ENV_FILE")
  dir=$(dirname "$ENV_FILE")
  if [ "$(stat -c %G "$ENV_FILE")" = "$USER_NAME" ] && [ -w "$ENV_FILE" ] \
      && [ "$(stat -c %G "$dir")" = "$USER_NAME" ] \
      && [ $(( 0$(stat -c %a "$dir") & 020 )) -ne 0 ]; then
    unchanged "env file $ENV_FILE" "group $USER_NAME may rewrite it"
  else
    chgrp "$USER_NAME" "$ENV_FILE" "$dir"
    chmod g+rw "$ENV_FILE"
    chmod g+rwx "$dir"
    changed "env file $ENV_FILE" "group $USER_NAME may rewrite it (and create files in $dir)"
  fi
  dropin=$(mktemp)
  WORK_DIR=$dropin
  printf '# install.sh --env-file: the agent rewrites IMAGE_TAG= in %s\n[Service]\nReadWritePaths=%s\n' \
    "$ENV_FILE" "$dir" >"$dropin"
  install -d -m 0755 "/etc/systemd/system/$SERVICE.service.d"
  if put_file "$dropin" "/etc/systemd/system/$SERVICE.service.d/env-file.conf" 0644 root root \
      "drop-in ReadWritePaths=$dir"; then
    UNIT_CHANGED=1
    RESTART=1
  fi
}

# step_credential NAME SRC DEST WHY: SRC installed root-only as DEST, handed to the agent
# as the systemd credential NAME by a drop-in. Not in the unit itself: systemd refuses to
# start a unit whose credential file is missing, and most hosts need none of these.
step_credential() {
  local name=$1 src=$2 dest=$3 why=$4 dropin
  [ -n "$src" ] || return 0
  if put_file "$src" "$dest" 0600 root root "${name//-/ } $dest"; then
    RESTART=1
  fi
  dropin=$(mktemp)
  WORK_DIR=$dropin
  printf '# install.sh %s\n[Service]\nLoadCredential=%s:%s\n' "$why" "$name" "$dest" >"$dropin"
  install -d -m 0755 "/etc/systemd/system/$SERVICE.service.d"
  if put_file "$dropin" "/etc/systemd/system/$SERVICE.service.d/$name.conf" 0644 \
      root root "drop-in LoadCredential=$name"; then
    UNIT_CHANGED=1
    RESTART=1
  fi
  rm -f "$dropin"
  WORK_DIR=""
}

# need_file OPTION FILE WHAT: a file given on the command line is readable and not empty.
need_file() {
  [ -n "$2" ] || return 0
  if [ ! -f "$2" ] || [ ! -r "$2" ]; then
    die "cannot read $3 file $2"
  fi
  [ -s "$2" ] || die "$3 file $2 is empty"
}

# -- main ---------------------------------------------------------------------------------
main() {
  local source="" token_file="" mode=install
  while [ $# -gt 0 ]; do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --uninstall) mode=uninstall ;;
      --token-file)
        [ $# -ge 2 ] || die "--token-file needs a FILE"
        token_file=$2; shift ;;
      --token-file=*) token_file=${1#*=} ;;
      --instance)
        [ $# -ge 2 ] || die "--instance needs a NAME"
        INSTANCE=$2; shift ;;
      --instance=*) INSTANCE=${1#*=} ;;
      --env-file)
        [ $# -ge 2 ] || die "--env-file needs a PATH"
        ENV_FILE=$2; shift ;;
      --env-file=*) ENV_FILE=${1#*=} ;;
      --promote-token-file)
        [ $# -ge 2 ] || die "--promote-token-file needs a FILE"
        PROMOTE_TOKEN_FILE=$2; shift ;;
      --promote-token-file=*) PROMOTE_TOKEN_FILE=${1#*=} ;;
      --notify-file)
        [ $# -ge 2 ] || die "--notify-file needs a FILE"
        NOTIFY_FILE=$2; shift ;;
      --notify-file=*) NOTIFY_FILE=${1#*=} ;;
      --keyless) KEYLESS=1 ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) [ -z "$source" ] || die "one SOURCE only (see --help)"; source=$1 ;;
    esac
    shift
  done
  [ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"
  if [ -n "$INSTANCE" ]; then
    use_instance "$INSTANCE"
  fi
  if [ "$mode" = uninstall ] && [ -n "$INSTANCE" ]; then
    uninstall_instance
  elif [ "$mode" = uninstall ]; then
    uninstall
  else
    need_file --token-file "$token_file" token
    need_file --promote-token-file "$PROMOTE_TOKEN_FILE" "promote token"
    need_file --notify-file "$NOTIFY_FILE" "notify URLs"
    [ -n "$source" ] || source=$REPO
    if [ -d "$source" ]; then
      source=$(cd "$source" && pwd)
    elif [ -f "$source" ]; then
      source=$(realpath "$source")
    fi
    [ -f "$ENV_EXAMPLE" ] || die "$ENV_EXAMPLE not found (run from a clone)"
    UNIT_CHANGED=0
    step_user
    step_docker_group
    step_venv
    want_keyless
    step_package "$source"
    step_link
    step_config
    step_token "$token_file"
    step_unit
    step_env_file
    step_credential promote-token "$PROMOTE_TOKEN_FILE" "$PROMOTE_TOKEN" \
      "--promote-token-file: the push token of a canary host"
    step_credential notify-urls "$NOTIFY_FILE" "$NOTIFY_URLS" \
      "--notify-file: the Apprise notification URLs"
    step_systemd
  fi
  if [ "$CHANGES" = 0 ]; then
    echo "install.sh: nothing to do"
  else
    echo "install.sh: $CHANGES change(s) made"
  fi
}

main "$@"
