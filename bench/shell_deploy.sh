#!/usr/bin/env bash
# The reference push-based deploy that twilight-agent replaces (CI SSHes in and runs it):
#
#   shell_deploy.sh TAG
#
# lock (exit 3 when busy) -> tag gate (exit 2) -> snapshot IMAGE_TAG from .env -> write the
# new IMAGE_TAG -> docker-compose pull && up -d -> poll /healthz 30 x 2 s -> on failure
# restore the old tag, up -d, exit 1. Run in the compose project's directory (.env and
# docker-compose.yml there). Each step prints one timestamped line on stderr
# ("<epoch seconds> <event>") so the benchmark can place it on the same clock as its prober.
#
# Environment: HEALTH_URL (default http://127.0.0.1:$APP_PORT/healthz from .env),
# LOCK_FILE (default ./deploy.lock), COMPOSE (default docker-compose),
# HEALTH_TRIES (30), HEALTH_SLEEP (2).
set -euo pipefail

TAG="${1:-}"
LOCK_FILE="${LOCK_FILE:-./deploy.lock}"
COMPOSE="${COMPOSE:-docker-compose}"
TRIES="${HEALTH_TRIES:-30}"
SLEEP="${HEALTH_SLEEP:-2}"
PATTERN='^(sha-[0-9a-f]{7}|latest|main|v[0-9]+\.[0-9]+\.[0-9]+)$'

say() { echo "$(date +%s.%N) $*" >&2; }

exec 9>"$LOCK_FILE"
if ! flock -n 9; then
    say "busy: another deploy holds $LOCK_FILE"
    exit 3
fi
if [[ ! "$TAG" =~ $PATTERN ]]; then
    say "invalid tag: '$TAG'"
    exit 2
fi

OLD_TAG="$(sed -n 's/^IMAGE_TAG=//p' .env | tail -n 1)"
if [[ -z "${HEALTH_URL:-}" ]]; then
    PORT="$(sed -n 's/^APP_PORT=//p' .env | tail -n 1)"
    HEALTH_URL="http://127.0.0.1:${PORT:-8080}/healthz"
fi

set_tag() {
    local tmp
    tmp="$(mktemp .env.XXXXXX)"
    sed "s/^IMAGE_TAG=.*/IMAGE_TAG=$1/" .env >"$tmp"
    mv "$tmp" .env
}

healthy() {
    local i
    for ((i = 1; i <= TRIES; i++)); do
        if curl -fsS -o /dev/null --max-time "$SLEEP" "$HEALTH_URL" 2>/dev/null; then
            return 0
        fi
        sleep "$SLEEP"
    done
    return 1
}

say "start $OLD_TAG -> $TAG"
set_tag "$TAG"
if $COMPOSE pull --quiet; then
    say "pulled"
    if $COMPOSE up -d; then
        say "up"
        if healthy; then
            say "healthy $TAG"
            exit 0
        fi
    fi
fi
say "health_failed $TAG: restoring $OLD_TAG"
set_tag "$OLD_TAG"
$COMPOSE up -d
say "restored $OLD_TAG"
exit 1
