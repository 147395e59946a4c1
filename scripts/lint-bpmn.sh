#!/usr/bin/env bash
# Lints every model in bpmn/init, bpmn/library and bpmn/examples with bpmnlint, configured by bpmn/.bpmnlintrc
# (bpmnlint's recommended rules and Camunda Platform 7.24's compatibility rules). Any finding,
# a warning included, fails. The npm packages live in $PROCOS_CACHE/node-tools, installed once.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tools="$PROCOS_CACHE/node-tools"
packages=(bpmnlint@11.15.0 bpmnlint-plugin-camunda-compat@2.61.0 camunda-bpmn-moddle@8.0.1)

installed() {
  local package name version
  for package in "${packages[@]}"; do
    name=${package%@*}
    version=${package##*@}
    grep -q "\"version\": \"$version\"" "$tools/node_modules/$name/package.json" 2>/dev/null || return 1
  done
}

if ! installed; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  say "installing bpmnlint and Camunda's compatibility rules from npm"
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent "${packages[@]}" >/dev/null) \
    || die "npm install of bpmnlint failed"
fi

# bpmnlint finds its plugin and the moddle extension from the working directory.
cd "$tools"
lint() { node_modules/.bin/bpmnlint --max-warnings=0 --config "$ROOT/bpmn/.bpmnlintrc" "$@"; }

# A model with faults of both rule sets must fail, or a pass below would prove nothing (say, a
# plugin that no longer loads).
scratch=$(mktemp -d)
on_exit "rm -rf '$scratch'"
cat >"$scratch/broken.bpmn" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" xmlns:modeler="http://camunda.org/schema/modeler/1.0"
    id="broken-definitions" targetNamespace="https://procos.io/bpmn/lint"
    modeler:executionPlatform="Camunda Platform" modeler:executionPlatformVersion="7.24.0">
  <bpmn:process id="broken" name="Broken" isExecutable="true">
    <bpmn:startEvent id="start" name="Started" />
    <bpmn:sequenceFlow id="to-work" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work" name="Work" camunda:type="external" camunda:topic="echo" />
  </bpmn:process>
</bpmn:definitions>
EOF
if findings=$(lint "$scratch/broken.bpmn" 2>&1); then
  die "bpmnlint passed a broken model: its configuration is not in force"$'\n'"$findings"
fi
for rule in no-bpmndi no-implicit-end end-event-required camunda-compat/history-time-to-live; do
  grep -q "$rule" <<<"$findings" || die "bpmnlint did not report $rule in a broken model:"$'\n'"$findings"
done

models=("$ROOT"/bpmn/init/*.bpmn "$ROOT"/bpmn/library/*.bpmn "$ROOT"/bpmn/examples/*.bpmn)
lint "${models[@]}" || die "bpmnlint found problems in the models above (rules: bpmn/.bpmnlintrc)"
say "bpmnlint: ${#models[@]} models pass"
