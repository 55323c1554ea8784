#!/bin/sh
# The entrypoint of our images: secrets reach them as files (Compose's `secrets:`, mounted in
# /run/secrets), never in the container's environment, where `docker inspect` and every child
# process would see them. As in the official images, each variable NAME_FILE that names a file
# in /run/secrets becomes NAME, holding that file's content (trailing newlines dropped); a
# comma-separated list of such files gives their contents joined by commas (a list of keys).
# Other *_FILE variables (SSL_CERT_FILE, AWS_CONFIG_FILE, ...) are paths: left as they are.
# Then the command runs in this process's place.
set -euf
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
    eval "files=\${${name}_FILE}"
    case "$files" in
        /run/secrets/*) ;;
        *) continue ;;
    esac
    if eval "[ -n \"\${${name}:-}\" ]"; then
        echo "secrets-entrypoint: both $name and ${name}_FILE are set; set one of them" >&2
        exit 1
    fi
    value=
    for file in $(printf %s "$files" | tr , ' '); do
        if [ ! -r "$file" ]; then
            echo "secrets-entrypoint: ${name}_FILE names $file, which cannot be read" >&2
            exit 1
        fi
        value="${value:+$value,}$(cat "$file")"
    done
    export "$name=$value"
    unset "${name}_FILE"
done
exec "$@"
