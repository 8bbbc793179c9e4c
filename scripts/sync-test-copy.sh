#!/usr/bin/env bash
# Mirror the collection's files (tracked + untracked-but-not-ignored, as listed by
# `git ls-files --cached --others --exclude-standard`) into
#   $REPO/.build/ansible-test/ansible_collections/rayops/disk
# ansible-test needs the collection at .../ansible_collections/<ns>/<name>/ as a
# real directory (it does not work through a symlinked cwd).  Files no longer
# listed (deleted, now ignored) are removed from the copy, including the
# copy's tests/output/ from earlier ansible-test runs.
# Prints the destination path on stdout; call it after every code change.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.build/ansible-test/ansible_collections/rayops/disk"

mkdir -p "$DEST"
filter="$(mktemp)"
trap 'rm -f "$filter"' EXIT

# rsync filter: include every listed file that exists and its parent
# directories, exclude the rest; --delete-excluded removes everything else
# from the copy.  Wildcard characters in names are escaped.
git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    python3 -c '
import os, re, sys
repo = sys.argv[1]
files = [f for f in sys.stdin.buffer.read().decode("utf-8", "surrogateescape").split("\0") if f]
dirs, out = set(), []
esc = lambda s: re.sub(r"([*?\[])", r"\\\1", s)
for f in files:
    if not os.path.lexists(os.path.join(repo, f)):
        continue  # deleted in the work tree but still in the index
    out.append("+ /" + esc(f))
    d = os.path.dirname(f)
    while d and d not in dirs:
        dirs.add(d)
        d = os.path.dirname(d)
for d in sorted(dirs):
    out.append("+ /" + esc(d) + "/")
out.append("- *")
sys.stdout.buffer.write(("\n".join(out) + "\n").encode("utf-8", "surrogateescape"))
' "$REPO" >"$filter"

# The copy lies inside this repository's ignored .build/, so ansible-test would
# ask the outer git for its files and find none: give the copy a git repository
# of its own (ansible-test lists untracked files too), kept out of rsync's reach.
rsync -a --delete --delete-excluded --filter="P /.git/" --filter="merge $filter" "$REPO/" "$DEST/"
[ -d "$DEST/.git" ] || git -C "$DEST" init -q
echo "$DEST"
