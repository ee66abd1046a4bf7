#!/bin/bash
# Container entrypoint: run the command as the host user when USER_ID and GROUP_ID are given
# (files written to mounted folders then belong to that user), else as the image's default user.
#
#   docker run -e USER_ID="$(id -u)" -e GROUP_ID="$(id -g)" IMAGE kitaeru docclass train ...
#
# A group or user that already has the requested id is reused; otherwise one named
# $USER_NAME (default "kitaeru") is created with that id and a home folder.
set -euo pipefail

USER_NAME="${USER_NAME:-kitaeru}"

fail() {
    echo "entrypoint: $*" >&2
    exit 2
}

is_number() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

# Print the name of the group with id $1, creating it when no group has that id.
ensure_group() {
    local gid="$1" entry
    if entry="$(getent group "$gid")"; then
        echo "${entry%%:*}"
        return
    fi
    groupadd --gid "$gid" "$USER_NAME"
    echo "$USER_NAME"
}

# Print the home folder of the user with id $1, creating the user (in group $2) when missing.
ensure_user() {
    local uid="$1" gid="$2" entry home
    if entry="$(getent passwd "$uid")"; then
        home="$(echo "$entry" | cut -d: -f6)"
        echo "${home:-/tmp}"
        return
    fi
    useradd --uid "$uid" --gid "$gid" --create-home --home-dir "/home/$USER_NAME" --shell /bin/bash "$USER_NAME"
    echo "/home/$USER_NAME"
}

main() {
    if [[ $# -eq 0 ]]; then
        set -- bash
    fi
    local uid="${USER_ID:-}" gid="${GROUP_ID:-}"
    if [[ -z "$uid" && -z "$gid" ]]; then
        exec "$@"
    fi
    [[ -n "$uid" && -n "$gid" ]] || fail "give both USER_ID and GROUP_ID (got USER_ID='${uid}', GROUP_ID='${gid}')"
    is_number "$uid" || fail "USER_ID must be a number, got '${uid}'"
    is_number "$gid" || fail "GROUP_ID must be a number, got '${gid}'"
    if [[ "$uid" == "0" ]]; then
        exec "$@"
    fi
    ensure_group "$gid" >/dev/null
    HOME="$(ensure_user "$uid" "$gid")"
    export HOME
    exec gosu "${uid}:${gid}" "$@"
}

main "$@"
