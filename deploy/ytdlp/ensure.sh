#!/usr/bin/env bash
# Installs the pinned yt-dlp (PyPI, requirements.txt: with its YouTube scripts and Deno) into a
# venv under $CLIPSTASH_YTDLP_HOME (default ~/.cache/clipstash-ytdlp), outside the clone, once
# per pinned version. Prints `CLIPSTASH_YTDLP=<path of yt-dlp>` for `eval`. Used by `just up`,
# `just worker` and `just test`; safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../retry.sh"
dest=${CLIPSTASH_YTDLP_HOME:-$HOME/.cache/clipstash-ytdlp}
mkdir -p "$dest"
# The stamp covers the pinned versions only (file contents, not paths), so every clone shares it.
want=$(sha256sum < "$here/requirements.txt" | cut -c1-16)
if [ "$(cat "$dest/.stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$dest/venv/bin/yt-dlp" ]; then
  echo "installing yt-dlp into $dest ..." >&2
  rm -rf "$dest/venv" "$dest/.stamp"
  python3 -m venv "$dest/venv"
  retry "$dest/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" > "$dest/.stamp"
fi
echo "CLIPSTASH_YTDLP=$dest/venv/bin/yt-dlp"
