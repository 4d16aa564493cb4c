#!/bin/sh
# Render alertmanager.yml's ${ALERTMANAGER_*_WEBHOOK_URL} placeholders from the environment:
#   render.sh IN OUT
# Alertmanager does not expand environment variables itself; the containers run this before starting it.
set -eu
in=$1
out=$2
escape() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }
oncall=$(escape "${ALERTMANAGER_ONCALL_WEBHOOK_URL:?set ALERTMANAGER_ONCALL_WEBHOOK_URL to the on-call webhook}")
team=$(escape "${ALERTMANAGER_TEAM_WEBHOOK_URL:?set ALERTMANAGER_TEAM_WEBHOOK_URL to the team webhook}")
sed -e "s|\${ALERTMANAGER_ONCALL_WEBHOOK_URL}|$oncall|g" \
    -e "s|\${ALERTMANAGER_TEAM_WEBHOOK_URL}|$team|g" "$in" > "$out"
