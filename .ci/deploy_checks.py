#!/usr/bin/env python3
"""The checks of .ci/validate-deploy, one subcommand each.

  manifests FILE...      every object against the Kubernetes schemas
                         (kubernetes-validate, strict) or, for the Prometheus
                         operator's kinds, against .ci/schemas; an object of
                         any other kind fails: nothing is skipped
  consistency            what the schemas cannot see: the Deployment against
                         gateway.toml (ports, grace period, environment, the
                         files the TOML names), the Secrets it needs against
                         secret.example.yaml, selectors against labels, and the
                         security settings every container must have
  metrics                every metric and label the alerts and the dashboard
                         use is one that src/ registers; writes their PromQL
                         out as a rule file for `promtool check rules`
  check-config           `warden check` on a byte-for-byte copy of the
                         ConfigMap's gateway.toml, beside throwaway key files
                         and environment variables made for the run

Each prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

PROBLEMS: list[str] = []


def problem(message: str) -> None:
    PROBLEMS.append(message)
    print(f"ERROR {message}")


def finish() -> int:
    if PROBLEMS:
        print(f"{len(PROBLEMS)} problem(s)")
        return 1
    return 0


def load_docs(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


# --- manifests -------------------------------------------------------------


def cmd_manifests(args: argparse.Namespace) -> int:
    import jsonschema
    import kubernetes_validate.utils as kv

    crd_schemas = {}
    for schema_file in sorted(Path(args.schemas).glob("*.json")):
        schema = json.loads(schema_file.read_text())
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        crd_schemas[key] = jsonschema.Draft202012Validator(schema)

    for path in args.files:
        for doc in load_docs(path):
            where = f"{path}: {name_of(doc)}"
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                problem(f"{where}: not a Kubernetes object (no apiVersion or kind)")
                continue
            validator = crd_schemas.get((doc["apiVersion"], doc["kind"]))
            if validator is not None:
                errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
                for error in errors:
                    at = ".".join(str(p) for p in error.path) or "(top)"
                    problem(f"{where}: {at}: {error.message}")
                if not errors:
                    print(f"ok    {where} (.ci/schemas, {doc['apiVersion']}, strict)")
                continue
            passed = []
            for version in args.kubernetes_version:
                try:
                    passed.append(kv.validate(doc, version, strict=True))
                except kv.ValidationError as error:
                    at = ".".join(str(p) for p in error.path) or "(top)"
                    problem(f"{where}: Kubernetes {error.version}: {at}: {error.message}")
                except kv.SchemaNotFoundError as error:
                    problem(
                        f"{where}: {error.message}; a custom resource needs a schema in "
                        f"{args.schemas}, nothing is skipped"
                    )
                    break
            if len(passed) == len(args.kubernetes_version):
                print(f"ok    {where} (Kubernetes {', '.join(passed)}, strict)")
    return finish()


# --- consistency -----------------------------------------------------------

UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def seconds(duration: str) -> float:
    """The humantime subset gateway.toml uses: "30s", "1m 30s", "500ms"."""
    parts = re.findall(r"(\d+)\s*([a-z]+)", duration)
    if not parts or re.sub(r"[\d\sa-z]", "", duration):
        raise ValueError(f"cannot read the duration {duration!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def selects(selector: dict, labels: dict) -> bool:
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"only matchLabels selectors are understood here, not {selector}")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def toml_files(config: dict) -> list[tuple[str, str]]:
    """(key path, relative path) of every file gateway.toml names."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else key
                if isinstance(value, str) and (key.endswith("_file") or key in ("store",) or here == "audit.path"):
                    found.append((here, value))
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(config, "")
    return found


def toml_env(config: dict) -> list[tuple[str, str]]:
    """(key path, variable) of every environment variable gateway.toml names."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else key
                if key.endswith("_env") and isinstance(value, str):
                    found.append((here, value))
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(config, "")
    return found


def check_security(deployment: dict) -> None:
    where = name_of(deployment)
    pod = deployment["spec"]["template"]["spec"]
    if pod.get("automountServiceAccountToken") is not False:
        problem(f"{where}: automountServiceAccountToken must be false (no pod here talks to the API server)")
    pod_security = pod.get("securityContext", {})
    if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(f"{where}: the pod's seccompProfile must be RuntimeDefault")
    for container in pod.get("initContainers", []) + pod["containers"]:
        at = f"{where}: container {container['name']}"
        sc = container.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True and pod_security.get("runAsNonRoot") is not True:
            problem(f"{at}: runAsNonRoot must be true")
        for key, want in (("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True)):
            if sc.get(key) is not want:
                problem(f"{at}: securityContext.{key} must be {str(want).lower()}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problem(f"{at}: capabilities must drop ALL and add none")
        resources = container.get("resources", {})
        for need in ("requests.cpu", "requests.memory", "limits.memory"):
            section, key = need.split(".")
            if key not in resources.get(section, {}):
                problem(f"{at}: resources.{need} must be set")
        if not container.get("readinessProbe") or not container.get("livenessProbe"):
            problem(f"{at}: needs a readiness and a liveness probe")


def cmd_consistency(args: argparse.Namespace) -> int:
    config = tomllib.loads(Path(args.toml).read_text())
    base = load_docs(args.base)
    monitoring = load_docs(args.monitoring) if args.monitoring else []
    examples = {d["metadata"]["name"]: d for d in load_docs(args.secret_example) if d.get("kind") == "Secret"}
    example_keys = {n: set(d.get("data", {})) | set(d.get("stringData", {})) for n, d in examples.items()}

    deployments = {d["metadata"]["name"]: d for d in by_kind(base, "Deployment")}
    for deployment in deployments.values():
        check_security(deployment)

    gateway = deployments.get(args.deployment)
    if gateway is None:
        problem(f"no Deployment {args.deployment!r} in {args.base}")
        return finish()
    where = name_of(gateway)
    pod = gateway["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == args.container), None)
    if container is None:
        problem(f"{where}: no container {args.container!r}")
        return finish()

    # SPEC §14: at least two replicas.
    if gateway["spec"].get("replicas", 1) < 2:
        problem(f"{where}: replicas must be at least 2")

    # The listeners of gateway.toml are the container's ports.
    server = config.get("server", {})
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for key, port_name, default in (("listen", "http", "127.0.0.1:8080"), ("admin_listen", "admin", "127.0.0.1:9090")):
        address = server.get(key, default)
        if not address.startswith(("0.0.0.0:", "[::]:")):
            problem(f"gateway.toml: server.{key} = {address!r} is not reachable from outside the pod")
        if ports.get(port_name) != port_of(address):
            problem(f"{where}: container port {port_name!r} is {ports.get(port_name)}, server.{key} listens on {port_of(address)}")
    annotations = gateway["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(ports.get("admin")):
        problem(f"{where}: the prometheus.io/port annotation is not the admin port {ports.get('admin')}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("admin", ports.get("admin")):
            problem(f"{where}: {probe} must be GET {path} on the admin port")

    # Kubernetes must not SIGKILL a pod before its drain is over.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = seconds(server.get("shutdown_grace", "10s"))
    period = pod.get("terminationGracePeriodSeconds", 30)
    if not pre_stop:
        problem(f"{where}: needs a preStop sleep, so the endpoint leaves the load balancers before the drain")
    if period <= pre_stop + grace:
        problem(
            f"{where}: terminationGracePeriodSeconds {period} must exceed the preStop pause ({pre_stop} s) "
            f"plus server.shutdown_grace ({grace:g} s)"
        )
    else:
        print(f"ok    grace: {pre_stop} s preStop + {grace:g} s shutdown_grace < {period} s terminationGracePeriodSeconds")

    # Every variable gateway.toml names is set, from a Secret in secret.example.yaml.
    env = {e["name"]: e for e in container.get("env", [])}
    for key, var in toml_env(config):
        if var not in env:
            problem(f"{where}: gateway.toml's {key} names {var}, which the container does not set")
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] not in example_keys.get(ref["name"], set()):
            problem(f"{where}: env {e['name']} reads Secret {ref['name']}/{ref['key']}, which secret.example.yaml does not show")
    for e in container.get("envFrom", []):
        problem(f"{where}: envFrom imports every key of a Secret or ConfigMap; name each variable instead")

    # Every file gateway.toml names is in the volume mounted at its directory.
    config_dir = os.path.dirname(args.config_path)
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == config_dir), None)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {d["metadata"]["name"] for d in by_kind(base, "ConfigMap")}
    if mount is None:
        problem(f"{where}: nothing is mounted at {config_dir}")
        return finish()
    volume = volumes[mount["name"]]
    projected: dict[str, str] = {}
    sources = volume.get("projected", {}).get("sources", [])
    if not sources:
        problem(f"{where}: {config_dir} must be a projected volume (the ConfigMap and the Secrets in one directory)")
    for source in sources:
        if "configMap" in source:
            ref = source["configMap"]
            if ref["name"] not in configmaps:
                problem(f"{where}: volume {mount['name']} uses ConfigMap {ref['name']}, which the base does not make")
            for item in ref.get("items", []):
                projected[item["path"]] = f"ConfigMap {ref['name']}"
        elif "secret" in source:
            ref = source["secret"]
            if ref["name"] not in examples:
                problem(f"{where}: volume {mount['name']} uses Secret {ref['name']}, which secret.example.yaml does not show")
            items = ref.get("items") or [{"key": k, "path": k} for k in sorted(example_keys.get(ref["name"], ()))]
            for item in items:
                if item["key"] not in example_keys.get(ref["name"], set()):
                    problem(f"{where}: volume {mount['name']} reads Secret {ref['name']}/{item['key']}, which secret.example.yaml does not show")
                projected[item["path"]] = f"Secret {ref['name']}"
    if projected.get(os.path.basename(args.config_path)) is None:
        problem(f"{where}: {args.config_path} is not in volume {mount['name']}")
    for key, path in toml_files(config):
        if os.path.isabs(path) or path.startswith(".."):
            problem(f"gateway.toml: {key} = {path!r} must be relative to the config's directory, so CI can check it")
        elif path not in projected:
            problem(f"gateway.toml: {key} = {path!r} is not in {config_dir} (volume {mount['name']} has {sorted(projected)})")
        else:
            print(f"ok    {key} = {path!r} comes from {projected[path]}")

    # Selectors find what they mean to find.
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    services = {d["metadata"]["name"]: d for d in by_kind(base, "Service")}
    for service in services.values():
        target = [n for n, labels in pods.items() if selects({"matchLabels": service["spec"]["selector"]}, labels)]
        if len(target) != 1:
            problem(f"{name_of(service)}: its selector matches {len(target)} Deployments' pods, not one")
            continue
        container_ports = {
            p["name"] for c in deployments[target[0]]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in container_ports:
                problem(f"{name_of(service)}: targetPort {port['targetPort']!r} is no port of Deployment {target[0]}")
    for deployment in deployments.values():
        if not selects(deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]):
            problem(f"{name_of(deployment)}: its selector does not match its own pod template")
    for hpa in by_kind(base, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deployments:
            problem(f"{name_of(hpa)}: scales {ref['kind']}/{ref['name']}, which the base does not have")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problem(f"{name_of(hpa)}: minReplicas must be at least 2")
    for pdb in by_kind(base, "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"], labels) for labels in pods.values()):
            problem(f"{name_of(pdb)}: its selector matches no pods")
    for policy in by_kind(base, "NetworkPolicy"):
        if not any(selects(policy["spec"]["podSelector"], labels) for labels in pods.values()):
            problem(f"{name_of(policy)}: its podSelector matches no pods")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and not any(selects(peer["podSelector"], labels) for labels in pods.values()):
                    problem(f"{name_of(policy)}: an ingress peer's podSelector matches no pods")

    # The ServiceMonitor scrapes the admin Service's port; the alerts are usable.
    for monitor in by_kind(monitoring, "ServiceMonitor"):
        matched = [s for s in services.values() if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
        if len(matched) != 1:
            problem(f"{name_of(monitor)}: its selector matches {len(matched)} Services, not one")
            continue
        service_ports = {p.get("name") for p in matched[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in service_ports:
                problem(f"{name_of(monitor)}: endpoint port {endpoint.get('port')!r} is no port of Service {matched[0]['metadata']['name']}")
        target_ports = {p.get("targetPort") for p in matched[0]["spec"]["ports"]}
        if "admin" not in target_ports and ports.get("admin") not in target_ports:
            problem(f"{name_of(monitor)}: Service {matched[0]['metadata']['name']} does not lead to the admin port")
        base_namespace = {d["metadata"].get("namespace") for d in base if d.get("kind") != "Namespace"}
        if monitor["metadata"].get("namespace") not in base_namespace:
            problem(f"{name_of(monitor)}: is in namespace {monitor['metadata'].get('namespace')}, the base in {sorted(base_namespace)}")
    alerts = [r for d in by_kind(monitoring, "PrometheusRule") for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r]
    names = [r["alert"] for r in alerts]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problem(f"PrometheusRule: alert {duplicate} is defined twice")
    for rule in alerts:
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problem(f"PrometheusRule: alert {rule['alert']} needs a severity label (critical, warning or info)")
        for annotation in ("summary", "description"):
            if annotation not in rule.get("annotations", {}):
                problem(f"PrometheusRule: alert {rule['alert']} needs a {annotation} annotation")
    return finish()


# --- metrics ---------------------------------------------------------------

# Labels Prometheus adds to every series it scrapes (the operator and the
# usual kubernetes_sd relabelling), and labels PromQL itself makes.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "endpoint", "container"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def registered_metrics(src: Path) -> dict[str, set[str] | None]:
    """Metric name -> its label names (None when they cannot be read off)."""
    metrics: dict[str, set[str] | None] = {}
    for path in src.rglob("*.rs"):
        text = path.read_text()
        for match in re.finditer(r'"(warden_[a-z0-9_]+)"', text):
            # Its labels: the first &[...] list in the same statement.
            statement = text[match.end(): text.find(";", match.end())]
            labels = re.search(r"&\[([^\]]*)\]", statement)
            found = set(re.findall(r'"([a-z_]+)"', labels.group(1))) if labels else None
            known = metrics.get(match.group(1))
            metrics[match.group(1)] = found if known is None else known | (found or set())
    return metrics


def expressions(monitoring: list[dict], dashboard: dict) -> list[tuple[str, str]]:
    found = []
    for doc in by_kind(monitoring, "PrometheusRule"):
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                found.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                expr = re.sub(r"\$\{?(namespace|job|route)\}?", ".*", expr)
                found.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("definition", "")
        inner = re.match(r"label_values\((.*),\s*([a-z_]+)\)$", query)
        if inner:
            expr = re.sub(r"\$\{?(namespace|job|route)\}?", ".*", inner.group(1))
            found.append((f"variable {variable['name']}", f"count by ({inner.group(2)}) ({expr})"))
    return found


def cmd_metrics(args: argparse.Namespace) -> int:
    known = registered_metrics(Path(args.src))
    monitoring = load_docs(args.monitoring)
    dashboard = json.loads(Path(args.dashboard).read_text())
    exprs = expressions(monitoring, dashboard)
    used = set()
    for where, expr in exprs:
        names = set(re.findall(r"\b(warden_[a-z0-9_]+)", expr))
        labels_here: set[str] = set(TARGET_LABELS)
        for name in sorted(names):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in known:
                metric = name
            elif base in known and base != name:
                metric = base
                labels_here.add("le")
            else:
                problem(f"{where}: {name} is not a metric that src/ registers")
                labels_here.add("*")  # its labels are unknown: no more findings from them
                continue
            used.add(metric)
            if known[metric] is None:
                labels_here.add("*")
            else:
                labels_here |= known[metric]
        # label_replace(v, "dst", "replacement", "src", "regex") makes "dst".
        labels_here |= set(re.findall(r',\s*"([a-z_]+)"\s*,\s*"[^"]*"\s*,\s*"[a-z_]+"\s*,\s*"[^"]*"\s*\)', expr))
        if any(n.startswith("process_") for n in re.findall(r"\b([a-z_]+)\{", expr)):
            labels_here.add("*")
        if "*" in labels_here:
            continue
        # Label names in selectors and in by/on/without/ignoring clauses.
        for selector in re.findall(r"\b(?:warden|process)_[a-z0-9_]+\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector):
                if label not in labels_here:
                    problem(f"{where}: label {label!r} is not one of {sorted(labels_here - TARGET_LABELS)} (or a target label)")
        for clause in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
            for label in re.findall(r"[a-z_]+", clause):
                if label not in labels_here:
                    problem(f"{where}: grouping label {label!r} is not one of {sorted(labels_here - TARGET_LABELS)} (or a target label)")
    print(f"ok    {len(exprs)} expressions use {len(used)} metrics that src/ registers")

    if args.promtool_rules:
        rules = [g for d in by_kind(monitoring, "PrometheusRule") for g in d["spec"]["groups"]]
        rules.append({
            "name": "dashboard-queries",
            "rules": [
                {"record": f"dashboard:query_{i}", "expr": expr}
                for i, (where, expr) in enumerate(exprs) if where.startswith(("panel", "variable"))
            ],
        })
        Path(args.promtool_rules).write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
    return finish()


# --- check-config ----------------------------------------------------------


def throwaway_env(key: str, var: str) -> str:
    if key.endswith("url_env"):
        return "redis://127.0.0.1:6379/0"
    if key.endswith("master_key_env"):
        return base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(48)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = tomllib.loads(Path(args.toml).read_text())
    with tempfile.TemporaryDirectory(prefix="warden-check-") as work:
        work_dir = Path(work)
        copy = work_dir / "gateway.toml"
        shutil.copyfile(args.toml, copy)
        keys = config.get("keys", [])

        def out(relative: str) -> Path:
            path = work_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            return path

        def run(*command: str) -> None:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

        for i, key in enumerate(keys):
            if "private_key_file" in key:
                run(args.warden, "keygen", "--alg", key["alg"], "--out", str(out(key["private_key_file"])))
            if "public_key_file" in key:
                private = work_dir / f".public-{i}.pem"
                run(args.warden, "keygen", "--alg", key["alg"], "--out", str(private))
                run("openssl", "pkey", "-in", str(private), "-pubout", "-out", str(out(key["public_key_file"])))
            if "secret_file" in key:
                out(key["secret_file"]).write_text(secrets.token_urlsafe(48))
        credentials = config.get("credentials", {})
        if "master_key_file" in credentials:
            out(credentials["master_key_file"]).write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        tls = config.get("server", {}).get("tls")
        if tls:
            run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=warden-ci", "-days", "1", "-keyout", str(out(tls["key_file"])), "-out", str(out(tls["cert_file"])))
            if "client_ca_file" in tls:
                shutil.copyfile(work_dir / tls["cert_file"], out(tls["client_ca_file"]))
        for key, path in toml_files(config):
            if key.endswith("ca_file") and not (work_dir / path).exists():
                ca_key = work_dir / f".ca-{secrets.token_hex(4)}.key"
                run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=warden-ci-ca", "-days", "1", "-keyout", str(ca_key), "-out", str(out(path)))

        env = dict(os.environ)
        made = []
        for key, var in toml_env(config):
            env[var] = throwaway_env(key, var)
            made.append(var)
        files = sorted(str(p.relative_to(work_dir)) for p in work_dir.rglob("*") if p.is_file() and p.name != "gateway.toml" and not p.name.startswith("."))
        print(f"      {args.toml} copied beside throwaway {', '.join(files) or 'nothing'}; throwaway {', '.join(made) or 'no variables'}")
        result = subprocess.run([args.warden, "check", "--config", str(copy)], env=env, text=True, capture_output=True)
        sys.stdout.write(result.stdout.replace(str(copy), args.toml))
        sys.stdout.write(result.stderr.replace(str(copy), args.toml))
        if result.returncode != 0:
            problem(f"warden check refused {args.toml} (exit {result.returncode})")
    return finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("manifests")
    p.add_argument("--kubernetes-version", action="append", required=True)
    p.add_argument("--schemas", required=True)
    p.add_argument("files", nargs="+")
    p.set_defaults(run=cmd_manifests)

    p = commands.add_parser("consistency")
    p.add_argument("--toml", required=True)
    p.add_argument("--base", required=True, help="the rendered base")
    p.add_argument("--monitoring", help="the rendered monitoring kustomization")
    p.add_argument("--secret-example", required=True)
    p.add_argument("--deployment", default="warden")
    p.add_argument("--container", default="warden")
    p.add_argument("--config-path", default="/etc/warden/gateway.toml")
    p.set_defaults(run=cmd_consistency)

    p = commands.add_parser("metrics")
    p.add_argument("--src", required=True)
    p.add_argument("--monitoring", required=True)
    p.add_argument("--dashboard", required=True)
    p.add_argument("--promtool-rules", help="write the alerts and the dashboard's queries here")
    p.set_defaults(run=cmd_metrics)

    p = commands.add_parser("check-config")
    p.add_argument("--toml", required=True)
    p.add_argument("--warden", required=True, help="the warden binary")
    p.set_defaults(run=cmd_check_config)

    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
