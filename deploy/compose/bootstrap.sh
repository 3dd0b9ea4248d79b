#!/usr/bin/env bash
# bootstrap.sh [secrets|up]: bring up compose.yaml's tree.
#   secrets  make ./secrets: the root's admin token, empty site files (compose
#            needs every env_file to exist, even before the sites are defined)
#   up       (default) secrets, then start the root, define the sites at the
#            root (once), write each site's connection string into its file,
#            start the sites. Running it again changes nothing that exists.
# COMPOSE is the compose command (default: podman-compose, else docker compose);
# OUTPOST is how the outpost CLI reaches the root (default: inside the root's
# container, where OUTPOST_TOKEN is set).
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${COMPOSE:-}" ]; then
  if command -v podman-compose >/dev/null; then COMPOSE=podman-compose; else COMPOSE="docker compose"; fi
fi
OUTPOST=${OUTPOST:-"$COMPOSE exec -T root /usr/local/bin/outpost"}
# name:mode:repository pattern of each site (compose.yaml has a service for each).
SITES=${SITES:-"factory1:ReadWrite:plant/* store1:ReadOnly:plant/*"}

secrets() {
  umask 077
  mkdir -p secrets
  if [ ! -s secrets/root.env ]; then
    token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    printf 'OUTPOST_ADMIN_TOKEN=%s\nOUTPOST_TOKEN=%s\n' "$token" "$token" > secrets/root.env
    echo "bootstrap: admin token written to secrets/root.env"
  fi
  for site in $SITES; do
    touch "secrets/${site%%:*}.env"
  done
}

# The CLI's exit code does not survive podman-compose exec (1.0.3 drops it), and
# podman-compose prints its podman command lines on stdout: judge by the lines
# the CLI prints.
nodes() { $OUTPOST node list 2>/dev/null | grep -E '^[A-Za-z][A-Za-z0-9]* ' || true; }

up() {
  secrets
  $COMPOSE up -d root
  echo "bootstrap: waiting for the root"
  for i in $(seq 1 60); do
    if nodes | grep -q '^NAME '; then break; fi
    [ "$i" = 60 ] && { echo "bootstrap: the root does not answer: $COMPOSE logs root" >&2; exit 1; }
    sleep 1
  done
  started=()
  for site in $SITES; do
    IFS=: read -r name mode repo <<<"$site"
    if ! nodes | grep -q "^$name "; then
      out=$($OUTPOST node create "$name" --mode "$mode" --repository "$repo" 2>&1 || true)
      nodes | grep -q "^$name " || { echo "bootstrap: could not define $name at the root: $out" >&2; exit 1; }
      echo "bootstrap: defined $name ($mode, $repo) at the root"
    fi
    if ! grep -q '^OUTPOST_CONNECTION_STRING=.' "secrets/$name.env"; then
      # Passwords are kept as hashes only: a lost file gets a new password 1.
      cs=$($OUTPOST node get-settings "$name" --generate-password 1 2>&1 | grep "^ConnectedRegistryName=$name;" | tail -n 1 || true)
      [ -n "$cs" ] || { echo "bootstrap: the root gave no connection string for $name" >&2; exit 1; }
      (umask 077; printf 'OUTPOST_CONNECTION_STRING=%s\n' "$cs" > "secrets/$name.env")
      echo "bootstrap: connection string of $name written to secrets/$name.env"
    fi
    started+=("$name")
  done
  $COMPOSE up -d --no-deps "${started[@]}"
  echo "bootstrap: up: root, ${started[*]}"
}

case "${1:-up}" in
  secrets) secrets ;;
  up) up ;;
  *) echo "usage: $0 [secrets|up]" >&2; exit 2 ;;
esac
