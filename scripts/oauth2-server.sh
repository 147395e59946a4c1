#!/usr/bin/env bash
# A real OAuth2 authorization server for the tests of the engine's OAuth2 support: NAV's
# mock-oauth2-server from Maven Central (client credentials grant, signed JWTs, JWKS and OpenID
# discovery), its runtime class path copied into $PROCOS_CACHE/oauth2-server once.
#
#   scripts/oauth2-server.sh install        copy the class path (idempotent)
#   scripts/oauth2-server.sh start PORT     install, then serve on 127.0.0.1:PORT in the
#                                           background; prints the PID once discovery answers
#
# Its issuers are named by the first path segment: http://127.0.0.1:PORT/procos is the issuer
# `procos`, with its token endpoint at …/procos/token.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION=$(sed -n 's:^  <version>\(.*\)</version>:\1:p' "$ROOT/tests/oauth2-server/pom.xml" | head -1)
DIR="$PROCOS_CACHE/oauth2-server/$VERSION"
MAIN=no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt

install() {
  [ -f "$DIR/.complete" ] && return 0
  say "fetching mock-oauth2-server $VERSION from Maven Central"
  rm -rf "$DIR"
  mvn -B -q -f "$ROOT/tests/oauth2-server/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$DIR/lib" \
    || die "fetching mock-oauth2-server with Maven failed (see above)"
  touch "$DIR/.complete"
}

start() {
  local port=${1:?usage: scripts/oauth2-server.sh start PORT} log
  install
  log="$PROCOS_CACHE/logs/oauth2-server.log"
  mkdir -p "$(dirname "$log")"
  SERVER_HOSTNAME=127.0.0.1 SERVER_PORT="$port" \
    nohup java -cp "$DIR/lib/*" "$MAIN" >"$log" 2>&1 &
  local pid=$!
  wait_for_url "http://127.0.0.1:$port/procos/.well-known/openid-configuration" \
    "the OAuth2 server" "$log"
  echo "$pid"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  *) die "usage: scripts/oauth2-server.sh install | start PORT" ;;
esac
