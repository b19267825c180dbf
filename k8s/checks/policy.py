#!/usr/bin/env python3
"""Checks of rendered Switchyard manifests that a schema cannot make (run by scripts/k8s-check.sh).

  policy.py services <rendered base> <Services dir>
      every folder under Services/ but switchyard-cli has a Deployment of that name in the base, and the
      other way round.
  policy.py overlay <name> <rendered overlay> <nats auth.conf>
      the hardening, probes, resources, grace periods, disruption budgets and spread of every workload; the
      NATS users, passwords and stream replicas; the default-deny NetworkPolicy; Secret keys. Prints the
      Secrets the operator must create for the overlay.

Prints one line per problem and exits 1 if there is any.
"""
import os
import re
import sys

import yaml  # PyYAML, installed with kubernetes-validate in the check's venv

SERVICE_COMPONENT = "service"
# Pods that need a Kubernetes API token: Prometheus' pod discovery.
API_TOKEN_ALLOWED = {"prometheus"}


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def name_of(doc):
    return doc["metadata"]["name"]


def strip_hash(name):
    """kustomize's generators append -<10 characters>; references carry the same suffix."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def selector_matches(selector, labels):
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_services(base_path, services_dir):
    problems = []
    deployments = {name_of(d) for d in by_kind(load(base_path), "Deployment")}
    folders = {e for e in os.listdir(services_dir)
               if os.path.isdir(os.path.join(services_dir, e)) and e != "switchyard-cli"}
    for folder in sorted(folders - deployments):
        problems.append(f"Services/{folder} has no Deployment `{folder}` in k8s/base")
    for deployment in sorted(deployments - folders):
        problems.append(f"k8s/base has a Deployment `{deployment}` but there is no Services/{deployment}")
    if not problems:
        print(f"  services: {len(folders)} service folders, each with its Deployment in the base "
              f"({', '.join(sorted(folders))})")
    return problems


def config_of(container, configmaps):
    """The environment a container gets from its ConfigMaps (envFrom, then literal env values)."""
    env = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref and ref["name"] in configmaps:
            env.update(configmaps[ref["name"]].get("data") or {})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def secret_refs(container):
    """(env name, secret, key, optional) for every env variable taken from a Secret."""
    refs = []
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs.append((var["name"], ref["name"], ref["key"], bool(ref.get("optional"))))
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref:
            refs.append(("*", ref["name"], "*", bool(ref.get("optional"))))
    return refs


def check_pod(where, pod, problems):
    spec = pod["spec"]
    ctx = spec.get("securityContext") or {}
    if ctx.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if not isinstance(ctx.get("runAsUser"), int) or ctx["runAsUser"] == 0:
        problems.append(f"{where}: pod securityContext.runAsUser is unset or 0")
    if not isinstance(ctx.get("fsGroup"), int) or ctx["fsGroup"] == 0:
        problems.append(f"{where}: pod securityContext.fsGroup is unset or 0")
    if (ctx.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{where}: {field} is set")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"{where}: volume {volume['name']} is a hostPath")
    sa = spec.get("serviceAccountName", "default")
    if sa == "default":
        problems.append(f"{where}: runs as the namespace's default ServiceAccount")
    if spec.get("automountServiceAccountToken") is not False and sa not in API_TOKEN_ALLOWED:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    if not isinstance(spec.get("terminationGracePeriodSeconds"), int):
        problems.append(f"{where}: terminationGracePeriodSeconds is not set")
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        cwhere = f"{where} container {container['name']}"
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: readOnlyRootFilesystem is not true")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{cwhere}: capabilities.drop does not contain ALL")
        if caps.get("add"):
            problems.append(f"{cwhere}: adds capabilities {caps['add']}")
        if sc.get("privileged"):
            problems.append(f"{cwhere}: is privileged")
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(bound) or {}):
                    problems.append(f"{cwhere}: no {bound}.{resource}")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"{cwhere}: no {probe}")


def check_overlay(overlay, path, auth_conf):
    problems = []
    docs = load(path)
    configmaps = {name_of(d): d for d in by_kind(docs, "ConfigMap")}
    secrets = {name_of(d): d for d in by_kind(docs, "Secret")}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind(docs, "HorizontalPodAutoscaler")}
    deployments = by_kind(docs, "Deployment")
    statefulsets = by_kind(docs, "StatefulSet")
    common = next((d.get("data") or {} for n, d in configmaps.items() if strip_hash(n) == "switchyard-common"), None)
    if common is None:
        problems.append("no ConfigMap switchyard-common")
        common = {}

    with open(auth_conf) as f:
        auth = f.read()
    nats_users = re.findall(r'^\s*user:\s*"([a-z0-9_-]+)"', auth, re.M)
    password_vars = re.findall(r"^\s*password:\s*\$(NATS_PASSWORD_[A-Z0-9_]+)\s*$", auth, re.M)
    if len(password_vars) != len(nats_users) or not nats_users:
        problems.append(f"{auth_conf}: {len(nats_users)} users but {len(password_vars)} `password: $NATS_PASSWORD_…`")

    referenced = {}  # secret name -> {key: optional}
    service_names = []
    for workload in deployments + statefulsets:
        kind, name = workload["kind"], name_of(workload)
        where = f"{kind}/{name}"
        pod = workload["spec"]["template"]
        labels = pod["metadata"].get("labels") or {}
        check_pod(where, pod, problems)
        if not any(selector_matches(p["spec"]["selector"], labels) for p in pdbs) and labels.get("app") != "postgres" \
                and labels.get("app") != "prometheus":
            problems.append(f"{where}: no PodDisruptionBudget selects its pods")
        for container in pod["spec"]["containers"]:
            for _, secret, key, optional in secret_refs(container):
                referenced.setdefault(strip_hash(secret), {})
                referenced[strip_hash(secret)][key] = referenced[strip_hash(secret)].get(key, True) and optional

        if labels.get("app.kubernetes.io/component") != SERVICE_COMPONENT:
            continue
        # One of the seven services.
        service_names.append(name)
        spec = pod["spec"]
        container = spec["containers"][0]
        env = dict(common)
        env.update(config_of(container, configmaps))
        drain = int(env.get("SWITCHYARD_DRAIN_SECONDS", "20"))
        pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= drain + pre_stop:
            problems.append(f"{where}: terminationGracePeriodSeconds {grace} is not above the preStop {pre_stop} s "
                            f"+ SWITCHYARD_DRAIN_SECONDS {drain} s")
        ops = env.get("SWITCHYARD_OPS_PORT")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        if ops is None or ports.get("ops") != int(ops):
            problems.append(f"{where}: container port `ops` {ports.get('ops')} is not SWITCHYARD_OPS_PORT {ops}")
        if "SWITCHYARD_HTTP_PORT" in env and ports.get("http") != int(env["SWITCHYARD_HTTP_PORT"]):
            problems.append(f"{where}: container port `http` {ports.get('http')} is not SWITCHYARD_HTTP_PORT "
                            f"{env['SWITCHYARD_HTTP_PORT']}")
        for probe, path_ in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
            get = (container.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path_ or get.get("port") not in ("ops", ports.get("ops")):
                problems.append(f"{where}: {probe} is not GET {path_} on the ops port")
        if not spec.get("topologySpreadConstraints"):
            problems.append(f"{where}: no topologySpreadConstraints")
        if hpas and name not in hpas:
            problems.append(f"{where}: no HorizontalPodAutoscaler (the overlay has autoscalers for others)")
        if name in hpas and "replicas" in workload["spec"]:
            problems.append(f"{where}: sets replicas although an autoscaler owns the count")
        user = env.get("SWITCHYARD_NATS_USER")
        if user not in nats_users:
            problems.append(f"{where}: SWITCHYARD_NATS_USER {user!r} is not a user of {auth_conf}")
        pw = [(strip_hash(s), k) for n, s, k, _ in secret_refs(container) if n == "SWITCHYARD_NATS_PASSWORD"]
        if pw != [("switchyard-nats-users", user)]:
            problems.append(f"{where}: SWITCHYARD_NATS_PASSWORD is not key {user!r} of Secret switchyard-nats-users")

    # NATS: every password variable of auth.conf comes from the users' Secret; streams as replicated as the cluster.
    nats = [s for s in statefulsets if name_of(s) == "nats"]
    if nats:
        nats_sts = nats[0]
        container = next(c for c in nats_sts["spec"]["template"]["spec"]["containers"] if c["name"] == "nats")
        env_refs = {n: (strip_hash(s), k) for n, s, k, _ in secret_refs(container)}
        for var, user in zip(password_vars, nats_users):
            if env_refs.get(var) != ("switchyard-nats-users", user):
                problems.append(f"StatefulSet/nats: {var} (auth.conf) is not set from key {user!r} of Secret "
                                "switchyard-nats-users; nats-server would not start")
        replicas = nats_sts["spec"].get("replicas", 1)
        stream_replicas = common.get("SWITCHYARD_STREAM_REPLICAS", "1")
        if str(replicas) != str(stream_replicas):
            problems.append(f"SWITCHYARD_STREAM_REPLICAS is {stream_replicas} but the NATS cluster has {replicas} servers")
        if replicas < 3:
            problems.append(f"StatefulSet/nats: {replicas} servers; JetStream needs 3 for a quorum that survives one loss")

    # NetworkPolicies: everything denied unless allowed.
    deny = [p for p in by_kind(docs, "NetworkPolicy")
            if p["spec"].get("podSelector") in ({}, None)
            and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")

    # Secrets: a generated Secret must have every key referenced without `optional`; the others are the
    # operator's to create.
    generated = {strip_hash(n): d for n, d in secrets.items()}
    to_create = []
    for secret, keys in sorted(referenced.items()):
        if secret in generated:
            have = set((generated[secret].get("data") or {}).keys()) | set((generated[secret].get("stringData") or {}).keys())
            missing = sorted(k for k, optional in keys.items() if k != "*" and not optional and k not in have)
            if missing:
                problems.append(f"Secret {secret} (generated) lacks the keys {', '.join(missing)}")
        else:
            required = sorted(k for k, optional in keys.items() if not optional)
            optional = sorted(k for k, optional in keys.items() if optional)
            text = f"{secret} (keys: {', '.join(required) or '-'}"
            text += f"; optional: {', '.join(optional)})" if optional else ")"
            to_create.append(text)

    if len(service_names) != 7:
        problems.append(f"{len(service_names)} service Deployments, expected the seven services")
    if not problems:
        print(f"  {overlay}: policy ok — {len(deployments)} Deployments, {len(statefulsets)} StatefulSet(s), "
              f"{len(hpas)} autoscalers, {len(pdbs)} disruption budgets, {len(by_kind(docs, 'NetworkPolicy'))} "
              f"NetworkPolicies; streams at {common.get('SWITCHYARD_STREAM_REPLICAS', '1')} replicas")
        print(f"  {overlay}: Secrets the operator creates: {'; '.join(to_create) if to_create else 'none (all generated)'}")
    return problems


def main(argv):
    if len(argv) == 4 and argv[1] == "services":
        problems = check_services(argv[2], argv[3])
        label = "services"
    elif len(argv) == 5 and argv[1] == "overlay":
        problems = check_overlay(argv[2], argv[3], argv[4])
        label = argv[2]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"k8s-check: {label}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
