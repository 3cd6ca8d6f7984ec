#!/bin/sh
# The image's entrypoint: run one part of the pipeline by name (see docs/deploy.md).
#
#   capture | vad | denoise | features | model [ARGS]   ->  ser-stream stage NAME [ARGS]
#   collect [ARGS]                                       ->  ser-stream collect [ARGS]
#   serve [ARGS]                                         ->  ser-stream serve [ARGS]
#
# With SER_STREAM_CURVE_SECRET (the folder a Secret is mounted at), the CURVE keys in it are
# copied into SER_STREAM_CURVE_DIR (default /run/ser-stream/keys) and the command gets
# --curve: ser-stream refuses keys that are links or open to others, and a Secret volume is
# made of links (..data/) readable by the pod's group. The Secret holds server.key,
# server.key_secret, client.key and client.key_secret (the files of `ser-stream keys DIR`);
# client.key is let in (authorized/client.key), and so is every authorized-NAME.key.
# SER_STREAM_LOG_LEVEL sets the log level (default info).
set -eu

usage="usage: entrypoint capture|vad|denoise|features|model|collect|serve [ARGS...]"
if [ $# -eq 0 ]; then
    echo "$usage" >&2
    exit 2
fi
part=$1
shift

copy_keys() {
    secret=$1
    keys=$2
    # A restarted container finds its previous copy (the folder outlives it): start afresh.
    rm -rf "$keys"
    (
        umask 077
        mkdir -p "$keys/authorized"
        for name in server.key server.key_secret client.key client.key_secret; do
            if [ ! -f "$secret/$name" ]; then
                echo "entrypoint: $secret/$name is missing; make the Secret from the files of" \
                    "\`ser-stream keys DIR\` (see docs/deploy.md)" >&2
                exit 2
            fi
            cat "$secret/$name" > "$keys/$name"
        done
        cat "$secret/client.key" > "$keys/authorized/client.key"
        for key in "$secret"/authorized-*.key; do
            [ -f "$key" ] || continue
            cat "$key" > "$keys/authorized/${key##*/authorized-}"
        done
    )
}

case "$part" in
    capture | vad | denoise | features | model) set -- stage "$part" "$@" ;;
    collect | serve) set -- "$part" "$@" ;;
    *)
        echo "entrypoint: no part named '$part'; $usage" >&2
        exit 2
        ;;
esac

if [ -n "${SER_STREAM_CURVE_SECRET:-}" ] && [ "$part" != serve ]; then
    keys=${SER_STREAM_CURVE_DIR:-/run/ser-stream/keys}
    copy_keys "$SER_STREAM_CURVE_SECRET" "$keys"
    set -- "$@" --curve "$keys"
fi

exec ser-stream --log-level "${SER_STREAM_LOG_LEVEL:-info}" "$@"
