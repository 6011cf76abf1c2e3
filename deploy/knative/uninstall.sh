#!/usr/bin/env bash
# Gives JobSinks back to Knative Eventing's own JobSink (undoes install.sh), then applies
# the Knative release manifests given, which bring back Knative's JobSink CRD (every sink's
# `spec.hook` is dropped with it) and its receiver.
#
#   deploy/knative/uninstall.sh eventing-core.yaml      # the release you run
#
# Knative's JobSink reconciler leads again within seconds (its Leases are deleted here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=knative-eventing
[ $# -gt 0 ] || { echo "usage: $0 <Knative Eventing release manifests (kubectl apply -f)>..." >&2; exit 2; }
step() { echo "==> $*" >&2; }

step "admission policies removed"
kubectl delete -f "$here/policies.yaml" --ignore-not-found

step "jobsink stopped, its account and Knative's JobSink reconciler Leases removed"
kubectl -n "$ns" delete deployment/jobsink --ignore-not-found --wait=true
kubectl -n "$ns" delete poddisruptionbudget/job-sink lease/jobsink-controller --ignore-not-found
kubectl delete -f "$here/rbac.yaml" --ignore-not-found
# What install.sh took from deploy/rbac.yaml, except the ServiceAccount, which is Knative's,
# and the bindings of job-sink-writer jobsink's controller made in sink namespaces.
kubectl delete clusterrolebinding/job-sink clusterrole/job-sink clusterrole/job-sink-writer \
  clusterrole/jobsink-metrics-reader --ignore-not-found
kubectl delete rolebindings --all-namespaces -l app.kubernetes.io/managed-by=jobsink \
  --field-selector metadata.name=job-sink-writer --ignore-not-found
kubectl -n "$ns" delete rolebinding/job-sink-leader-election role/job-sink-leader-election \
  --ignore-not-found
prefix=$(sed -n '/JOBSINK_KNATIVE_LEASE/{n;s/.*value: *//p}' "$here/deployment.yaml")
kubectl -n "$ns" get leases -o name | grep -F "lease.coordination.k8s.io/$prefix." |
  xargs -r kubectl -n "$ns" delete

# jobsink's conditions (JobTemplateReady, HookReady and the Ready they decided) would
# outlive it: Knative's reconciler keeps conditions it does not know. It writes its own
# status for every sink again.
kubectl get jobsinks -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' |
  while read -r namespace name; do
    kubectl -n "$namespace" patch "jobsink/$name" --subresource=status --type=merge -p '{"status":null}'
  done

step "Knative's webhooks see JobSinks again"
for webhook in mutatingwebhookconfiguration/webhook.eventing.knative.dev \
  validatingwebhookconfiguration/validation.webhook.eventing.knative.dev; do
  name=${webhook#*/}
  kubectl patch "$webhook" --type=strategic -p "{\"webhooks\":[{\"name\":\"$name\",\
\"matchConditions\":[{\"name\":\"jobsinks-are-jobsinks\",\"\$patch\":\"delete\"}]}]}"
done

step "Knative's release applied again (its JobSink CRD and receiver)"
kubectl apply -f "$@"
kubectl -n "$ns" scale deployment/job-sink --replicas=1
kubectl -n "$ns" rollout status deployment/job-sink --timeout=180s
