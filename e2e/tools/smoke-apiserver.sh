#!/usr/bin/env bash
# Smoke test: etcd + kube-apiserver started envtest-style (no kubelet, no controller-manager),
# everything on 127.0.0.1, RBAC on, a static bearer token for an admin in system:masters.
# Checks: /readyz, namespaces, RBAC denying a plain user, a CRD whose CEL rule rejects an
# invalid object, server-side apply, Leases, paginated lists, watches and streaming lists;
# then kubeconform offline against schemas made from this apiserver's /openapi/v2, and helm
# (template | kubeconform, install). Stops what it started and removes its temp dir, always.
#
#   e2e/tools/smoke-apiserver.sh         # binaries from e2e/tools/build.sh (built if missing)
#   KUBE_APISERVER=/path ETCD=/path KUBECONFORM=/path HELM=/path e2e/tools/smoke-apiserver.sh
#   SMOKE_SKIP_TOOLS=1                   # apiserver checks only (no kubeconform, no helm)
#   KUBE_APISERVER_EXTRA_FLAGS='--v=2'   # more kube-apiserver flags
#   KEEP_LOGS=1                          # keep logs, manifests, schemas in $KEEP_LOGS_DIR
#                                        # (default /tmp/smoke-apiserver-logs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_APISERVER=${KUBE_APISERVER:-$("$here/build.sh" kube-apiserver)}
ETCD=${ETCD:-$("$here/build.sh" etcd)}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/smoke-apiserver.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  # apiserver first, then etcd (reverse start order): an apiserver whose etcd is gone is slow to stop
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ -n "${KEEP_LOGS:-}" ]; then
    rm -rf "${KEEP_LOGS_DIR:=/tmp/smoke-apiserver-logs}"; mkdir -p "$KEEP_LOGS_DIR"
    cp -r "$tmp"/*.log "$tmp"/*.yaml "$tmp"/schemas "$KEEP_LOGS_DIR"/ 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    for f in etcd kube-apiserver; do
      [ -f "$tmp/$f.log" ] && { echo "--- last lines of $f.log" >&2; tail -n 30 "$tmp/$f.log" >&2; }
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# free_port VAR: a free port on 127.0.0.1 into VAR, below the ephemeral range so outgoing
# connections don't take it, and none picked twice.
used_ports=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$(( (RANDOM * 32768 + RANDOM) % 12000 + 20000 ))
    case "$used_ports" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  fail "no free port"
}

wait_for() { # wait_for SECONDS PID DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) pid=$2 what=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$what: process exited"
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not ready after $1 s"
    sleep 0.2
  done
}

free_port etcd_client
free_port etcd_peer
free_port api_port

# --- etcd
mkdir -m 700 "$tmp/etcd"
"$ETCD" --name=smoke --data-dir="$tmp/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_client" --advertise-client-urls="http://127.0.0.1:$etcd_client" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="smoke=http://127.0.0.1:$etcd_peer" --initial-cluster-state=new \
  >"$tmp/etcd.log" 2>&1 &
pids+=($!)
etcd_pid=$!
wait_for 30 "$etcd_pid" etcd curl -sf "http://127.0.0.1:$etcd_client/health"
ok "etcd $("$ETCD" --version | head -n1 | awk '{print $NF}') on 127.0.0.1:$etcd_client"

# --- what kube-apiserver needs
openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
user_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
cat >"$tmp/tokens.csv" <<EOF
$admin_token,smoke-admin,smoke-admin-uid,"system:masters"
$user_token,smoke-user,smoke-user-uid
EOF

# --- kube-apiserver
api="https://127.0.0.1:$api_port"
start=$SECONDS
start_ns=$(date +%s%N)
"$KUBE_APISERVER" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --cert-dir="$tmp/certs" \
  --etcd-servers="http://127.0.0.1:$etcd_client" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer="$api" \
  --service-account-key-file="$tmp/sa.pub" \
  --service-account-signing-key-file="$tmp/sa.key" \
  --token-auth-file="$tmp/tokens.csv" \
  --authorization-mode=RBAC \
  --allow-privileged=true \
  --disable-admission-plugins=ServiceAccount \
  --endpoint-reconciler-type=none \
  ${KUBE_APISERVER_EXTRA_FLAGS:-} \
  >"$tmp/kube-apiserver.log" 2>&1 &
pids+=($!)
api_pid=$!

k() { # k METHOD PATH [curl args...] -> body on stdout, HTTP status in $tmp/status
  local method=$1 path=$2
  shift 2
  curl -sk -o "$tmp/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $admin_token" \
    "$@" "$api$path" >"$tmp/status" || true
  cat "$tmp/body"
}
status() { cat "$tmp/status"; }
expect() { # expect STATUS WHAT
  [ "$(status)" = "$1" ] || { cat "$tmp/body" >&2; echo >&2; fail "$2: HTTP $(status), want $1"; }
}

wait_for 120 "$api_pid" kube-apiserver curl -skf -H "Authorization: Bearer $admin_token" "$api/readyz"
ready_ms=$((($(date +%s%N) - start_ns) / 1000000))
ok "kube-apiserver $("$KUBE_APISERVER" --version | awk '{print $2}') ready on $api after ${ready_ms} ms"

k GET /version >/dev/null
expect 200 /version
ok "/version: $(tr -d ' \n' <"$tmp/body" | grep -o '"gitVersion":"[^"]*"')"

# default and kube-system are created by the apiserver itself (a post-start hook); wait for both.
deadline=$((SECONDS + 30))
until k GET /api/v1/namespaces | grep -q '"name": *"kube-system"' && grep -q '"name": *"default"' "$tmp/body"; do
  [ "$SECONDS" -lt "$deadline" ] || fail "namespaces default and kube-system not there"
  sleep 0.2
done
ok "GET /api/v1/namespaces lists default and kube-system"

curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $user_token" "$api/api/v1/namespaces" >"$tmp/status"
expect 403 "RBAC: a user outside system:masters listing namespaces"
ok "RBAC: smoke-user is forbidden to list namespaces"

k POST /api/v1/namespaces -H 'Content-Type: application/json' \
  -d '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"smoke"}}' >/dev/null
expect 201 "create namespace"
ok "namespace smoke created"

# --- CRD with a CEL validation rule
cat >"$tmp/crd.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.example.com
spec:
  group: smoke.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: self.replicas <= self.maxReplicas
              message: replicas must not exceed maxReplicas
EOF
k POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions -H 'Content-Type: application/yaml' --data-binary @"$tmp/crd.yaml" >/dev/null
expect 201 "create CRD"
deadline=$((SECONDS + 30))
until k GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.example.com |
  tr -d ' \n' | grep -q '"type":"Established","status":"True"'; do
  [ "$SECONDS" -lt "$deadline" ] || fail "CRD not Established"
  sleep 0.2
done
# discovery of the new group can lag a moment behind Established
deadline=$((SECONDS + 30))
until k GET /apis/smoke.example.com/v1/namespaces/smoke/widgets >/dev/null; [ "$(status)" = 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "widgets not served"
  sleep 0.2
done
ok "CRD widgets.smoke.example.com Established and served"

k POST /apis/smoke.example.com/v1/namespaces/smoke/widgets -H 'Content-Type: application/json' \
  -d '{"apiVersion":"smoke.example.com/v1","kind":"Widget","metadata":{"name":"bad"},"spec":{"replicas":5,"maxReplicas":3}}' >/dev/null
expect 422 "invalid Widget"
grep -q 'replicas must not exceed maxReplicas' "$tmp/body" || fail "422 without the CEL message: $(cat "$tmp/body")"
ok "invalid Widget rejected with 422: $(grep -o 'spec: Invalid value[^"]*' "$tmp/body" | head -n1)"

k POST /apis/smoke.example.com/v1/namespaces/smoke/widgets -H 'Content-Type: application/json' \
  -d '{"apiVersion":"smoke.example.com/v1","kind":"Widget","metadata":{"name":"good"},"spec":{"replicas":2,"maxReplicas":3}}' >/dev/null
expect 201 "valid Widget"
ok "valid Widget created"

# --- server-side apply (create, then an update by the same manager)
for v in one two; do
  k PATCH "/api/v1/namespaces/smoke/configmaps/applied?fieldManager=smoke&force=true" \
    -H 'Content-Type: application/apply-patch+yaml' --data-binary @- >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
data:
  key: $v
EOF
  case $v in one) expect 201 "server-side apply (create)" ;; two) expect 200 "server-side apply (update)" ;; esac
done
tr -d ' \n' <"$tmp/body" | grep -q '"manager":"smoke","operation":"Apply"' || fail "no Apply managedFields entry"
tr -d ' \n' <"$tmp/body" | grep -q '"key":"two"' || fail "apply did not update data"
k PATCH "/apis/smoke.example.com/v1/namespaces/smoke/widgets/applied?fieldManager=smoke" \
  -H 'Content-Type: application/apply-patch+yaml' \
  --data-binary $'apiVersion: smoke.example.com/v1\nkind: Widget\nmetadata: {name: applied}\nspec: {replicas: 9, maxReplicas: 1}\n' >/dev/null
expect 422 "server-side apply of an invalid Widget"
ok "server-side apply works (ConfigMap create+update, CEL applies to apply patches)"

# --- coordination.k8s.io Leases
k GET /apis/coordination.k8s.io/v1 | tr -d ' \n' | grep -q '"name":"leases"' || fail "no leases in coordination.k8s.io/v1"
k POST /apis/coordination.k8s.io/v1/namespaces/smoke/leases -H 'Content-Type: application/json' \
  -d '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"smoke-leader"},"spec":{"holderIdentity":"smoke","leaseDurationSeconds":15}}' >/dev/null
expect 201 "create Lease"
ok "coordination.k8s.io/v1 Lease created"

# --- list and watch the way controllers do: paginated list, watch from a resourceVersion,
# and a streaming list (sendInitialEvents, what kube-rs' streaming_lists and client-go's
# WatchListClient use), which ends its initial events with a bookmark.
for n in 1 2 3; do
  k POST /api/v1/namespaces/smoke/configmaps -H 'Content-Type: application/json' \
    -d "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"page-$n\"}}" >/dev/null
  expect 201 "create ConfigMap page-$n"
done
k GET '/api/v1/namespaces/smoke/configmaps?limit=2' >/dev/null
expect 200 "paginated list"
continue_token=$(jq -r '.metadata.continue' "$tmp/body")
rv=$(jq -r '.metadata.resourceVersion' "$tmp/body")
[ -n "$continue_token" ] && [ "$continue_token" != null ] || fail "no continue token"
k GET "/api/v1/namespaces/smoke/configmaps?limit=2&continue=$continue_token" >/dev/null
expect 200 "list continuation"
ok "paginated list (limit=2 + continue)"
k GET /api/v1/namespaces/smoke/configmaps >/dev/null
expect 200 "consistent list"
rv=$(jq -r '.metadata.resourceVersion' "$tmp/body")
( sleep 1
  curl -sk -o /dev/null -X POST -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"watched"}}' "$api/api/v1/namespaces/smoke/configmaps" ) &
k GET "/api/v1/namespaces/smoke/configmaps?watch=1&resourceVersion=$rv&allowWatchBookmarks=true&timeoutSeconds=3" >/dev/null
wait $!
expect 200 "watch"
grep -q '"type":"ADDED".*"name":"watched"' "$tmp/body" || fail "watch from rv $rv saw no ADDED watched: $(head -c 500 "$tmp/body")"
ok "watch from a list's resourceVersion sees a new object"
k GET '/api/v1/namespaces/smoke/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3' >/dev/null
expect 200 "streaming list"
grep -q '"type":"BOOKMARK".*"k8s.io/initial-events-end":"true"' "$tmp/body" ||
  fail "streaming list without the initial-events-end bookmark: $(head -c 500 "$tmp/body")"
ok "streaming list: $(grep -c '"type":"ADDED"' "$tmp/body") initial ADDED events, then the initial-events-end bookmark"

k GET /openapi/v2 -H 'Accept: application/json' >/dev/null
expect 200 "/openapi/v2"
ok "/openapi/v2 served ($(wc -c <"$tmp/body") bytes)"

if [ -z "${SMOKE_SKIP_TOOLS:-}" ]; then
  # --- offline manifest validation: kubeconform against schemas made from this apiserver's
  # /openapi/v2 (built-in kinds and the CRDs installed in it, here Widget).
  KUBECONFORM=${KUBECONFORM:-$("$here/build.sh" kubeconform)}
  OPENAPI2JSONSCHEMA=${OPENAPI2JSONSCHEMA:-$(dirname "$KUBECONFORM")/openapi2jsonschema}
  HELM=${HELM:-$("$here/build.sh" helm)}
  kver=$("$KUBE_APISERVER" --version | awk '{print $2}')
  kver=${kver#v}
  o2j_start=$(date +%s%N)
  "$OPENAPI2JSONSCHEMA" -url "$api/openapi/v2" -token "$admin_token" -insecure \
    -out "$tmp/schemas" -kubernetes-version "$kver" 2>"$tmp/o2j.log" || { cat "$tmp/o2j.log" >&2; fail openapi2jsonschema; }
  ok "schemas for kubeconform (plain and -strict): $(find "$tmp/schemas/v$kver-standalone" -name '*.json' | wc -l) files each, $(du -sh "$tmp/schemas" | cut -f1), $((($(date +%s%N) - o2j_start) / 1000000)) ms"
  kc() { "$KUBECONFORM" -schema-location "$tmp/schemas" -kubernetes-version "$kver" -strict -summary "$@"; }

  cat >"$tmp/good.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: smoke, creationTimestamp: null}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example/web:1
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 1, memory: 64Mi}, limits: {cpu: "1500m"}}
        readinessProbe: {httpGet: {path: /ready, port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: l}
spec: {holderIdentity: x, leaseDurationSeconds: 15}
---
apiVersion: smoke.example.com/v1
kind: Widget
metadata: {name: w}
spec: {replicas: 1, maxReplicas: 2}
EOF
  kc "$tmp/good.yaml" "$tmp/crd.yaml" >"$tmp/kc.out" 2>&1 || { cat "$tmp/kc.out" >&2; fail "kubeconform rejected valid manifests"; }
  ok "kubeconform -strict, offline: $(tail -n1 "$tmp/kc.out")"
  cat >"$tmp/bad.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicaz: 1
  selector: {matchLabels: {app: web}}
  template: {spec: {containers: [{name: web, image: x}]}}
---
apiVersion: smoke.example.com/v1
kind: Widget
metadata: {name: w}
spec: {replicas: many}
EOF
  if kc "$tmp/bad.yaml" >"$tmp/kc.out" 2>&1; then cat "$tmp/kc.out" >&2; fail "kubeconform accepted invalid manifests"; fi
  grep -q 'replicaz' "$tmp/kc.out" && grep -q 'Widget w is invalid' "$tmp/kc.out" ||
    { cat "$tmp/kc.out" >&2; fail "kubeconform did not name both errors"; }
  ok "kubeconform rejects an unknown Deployment field and a wrongly typed Widget field:"
  grep -E 'is invalid' "$tmp/kc.out" | sed 's/^/    /' | cut -c1-240

  # --- helm: template a chart, validate it offline, install it into this apiserver
  export HELM_CACHE_HOME=$tmp/helm/cache HELM_CONFIG_HOME=$tmp/helm/config HELM_DATA_HOME=$tmp/helm/data
  cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: smoke, cluster: {server: "$api", insecure-skip-tls-verify: true}}]
users: [{name: smoke-admin, user: {token: "$admin_token"}}]
contexts: [{name: smoke, context: {cluster: smoke, user: smoke-admin, namespace: smoke}}]
current-context: smoke
EOF
  chmod 600 "$tmp/kubeconfig"
  "$HELM" create "$tmp/smokechart" >/dev/null
  "$HELM" template smoke "$tmp/smokechart" --namespace smoke --kube-version "$kver" >"$tmp/chart.yaml"
  kc "$tmp/chart.yaml" >"$tmp/kc.out" 2>&1 || { cat "$tmp/kc.out" >&2; fail "kubeconform rejected helm's output"; }
  ok "helm $("$HELM" version --template '{{.Version}}') template | kubeconform: $(tail -n1 "$tmp/kc.out")"
  "$HELM" install smoke "$tmp/smokechart" --kubeconfig "$tmp/kubeconfig" --namespace smoke >"$tmp/helm.out" 2>&1 ||
    { cat "$tmp/helm.out" >&2; fail "helm install"; }
  k GET /apis/apps/v1/namespaces/smoke/deployments/smoke-smokechart >/dev/null
  expect 200 "the Deployment helm installed"
  ok "helm install into the apiserver: release $("$HELM" list --kubeconfig "$tmp/kubeconfig" -n smoke -q)"
fi

if grep -iE '^E[0-9]{4} ' "$tmp/kube-apiserver.log" | grep -viE 'Unable to remove old endpoints from kubernetes service' >"$tmp/errors"; then
  echo "note: kube-apiserver logged $(wc -l <"$tmp/errors") error line(s); first ones:"
  head -n 10 "$tmp/errors" | cut -c1-300
fi
echo "smoke-apiserver: all checks passed (apiserver ready after ${ready_ms} ms, total $((SECONDS - start)) s)"
