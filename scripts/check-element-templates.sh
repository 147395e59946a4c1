#!/usr/bin/env bash
# Validates bpmn/element-templates/*.json against the official element-templates JSON schema.
# The npm packages live in $PROCOS_CACHE/node-tools, installed once.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tools="$PROCOS_CACHE/node-tools"
if [ ! -f "$tools/node_modules/@camunda/element-templates-json-schema/resources/schema.json" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  say "installing the element-templates JSON schema and ajv from npm"
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent \
    @camunda/element-templates-json-schema@0.22.1 ajv@8.20.0 >/dev/null) \
    || die "npm install of the element-templates schema failed"
fi
node "$ROOT/scripts/validate-element-templates.mjs" "$tools/node_modules" "$ROOT"/bpmn/element-templates/*.json
