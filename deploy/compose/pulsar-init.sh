#!/bin/sh
# Creates the tenants and namespaces core-dict uses, with deduplication on (what scripts/deps.sh does for
# the local broker), once the compose stack's Pulsar answers.
set -eu
admin=http://pulsar:8080/admin/v2
until curl -sf "$admin/brokers/health" >/dev/null; do sleep 2; done
for ns in dict/events lb-conn/dict core-dict/dlq; do
	tenant=${ns%%/*}
	curl -s -o /dev/null -X PUT -H 'Content-Type: application/json' \
		--data '{"adminRoles":[],"allowedClusters":["standalone"]}' "$admin/tenants/$tenant"
	curl -s -o /dev/null -X PUT "$admin/namespaces/$ns"
	curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data true "$admin/namespaces/$ns/deduplication"
done
echo "pulsar namespaces ready"
