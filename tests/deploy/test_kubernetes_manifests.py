"""deploy/kubernetes: every manifest has what its kind requires, and every
reference inside the set resolves (selectors, Secrets, ConfigMaps and their
keys, volumes, named ports, the StatefulSets' headless Services)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from deployfiles import manifests

KINDS = {
    "v1": {"Namespace", "Service", "ConfigMap", "Secret"},
    "apps/v1": {"Deployment", "StatefulSet"},
}
WORKLOADS = {"Deployment", "StatefulSet"}


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def _keys(doc: dict[str, Any]) -> set[str]:
    return {*doc.get("data", {}), *doc.get("stringData", {})}


def _check_ref(docs: list[dict[str, Any]], kind: str, name: str, key: str | None) -> list[str]:
    target = _find(docs, kind, name)
    if target is None:
        return [f"{kind} {name} is not among the manifests"]
    if key is not None and key not in _keys(target):
        return [f"{kind} {name} has no key {key!r}"]
    return []


def _check_probe(probe: Any, what: str, ports: dict[str, int]) -> list[str]:
    if not isinstance(probe, dict) or "httpGet" not in probe:
        return [f"{what}: missing, or not an httpGet probe"]
    get = probe["httpGet"]
    problems = []
    if get.get("path") != "/healthz":
        problems.append(f"{what}: path {get.get('path')!r}, expected /healthz")
    port = get.get("port")
    if port not in ports and port not in ports.values():
        problems.append(f"{what}: port {port!r} is not a port of the container")
    return problems


def _check_workload(doc: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    name = f"{doc['kind']} {doc['metadata']['name']}"
    spec = doc.get("spec", {})
    problems = []
    match = spec.get("selector", {}).get("matchLabels")
    template = spec.get("template", {})
    labels = template.get("metadata", {}).get("labels", {})
    if not match or not isinstance(match, dict):
        problems.append(f"{name}: spec.selector.matchLabels is required")
    elif any(labels.get(k) != v for k, v in match.items()):
        problems.append(f"{name}: the selector {match} does not select its own pods {labels}")
    pod = template.get("spec", {})
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append(f"{name}: pods must set securityContext.runAsNonRoot: true")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    for v in volumes.values():
        if "secret" in v:
            problems += _check_ref(docs, "Secret", v["secret"]["secretName"], None)
        if "configMap" in v:
            problems += _check_ref(docs, "ConfigMap", v["configMap"]["name"], None)
    if doc["kind"] == "StatefulSet":
        service = _find(docs, "Service", spec.get("serviceName", ""))
        if service is None or service["spec"].get("clusterIP") != "None":
            problems.append(f"{name}: serviceName must name a headless Service of the set")
    containers = pod.get("containers")
    if not containers:
        problems.append(f"{name}: no containers")
    for c in containers or []:
        where = f"{name} container {c.get('name')}"
        if not c.get("name") or not c.get("image"):
            problems.append(f"{where}: name and image are required")
        ports = {p.get("name", ""): p["containerPort"] for p in c.get("ports", [])}
        if not ports or not all(isinstance(p, int) for p in ports.values()):
            problems.append(f"{where}: needs containerPort numbers")
        for probe in ("readinessProbe", "livenessProbe"):
            problems += _check_probe(c.get(probe), f"{where} {probe}", ports)
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                problems += _check_ref(docs, "Secret", r["name"], r["key"])
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                problems += _check_ref(docs, "ConfigMap", r["name"], r["key"])
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes and mount["name"] not in claims:
                problems.append(f"{where}: mounts unknown volume {mount['name']}")
                continue
            volume = volumes.get(mount["name"], {})
            if "subPath" in mount:
                source = volume.get("secret", {}).get("secretName"), "Secret"
                if "configMap" in volume:
                    source = volume["configMap"]["name"], "ConfigMap"
                if source[0]:
                    problems += _check_ref(docs, source[1], source[0], mount["subPath"])
        context = c.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
    return problems


def _check_service(doc: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    name = f"Service {doc['metadata']['name']}"
    spec = doc.get("spec", {})
    selector = spec.get("selector")
    ports = spec.get("ports")
    if not selector or not ports:
        return [f"{name}: spec.selector and spec.ports are required"]
    problems = []
    pods = [
        d["spec"]["template"]
        for d in docs
        if d["kind"] in WORKLOADS
        and all(
            d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()
        )
    ]
    if not pods:
        return [f"{name}: its selector {selector} selects no workload"]
    named = {
        p.get("name"): p["containerPort"]
        for pod in pods
        for c in pod["spec"]["containers"]
        for p in c.get("ports", [])
    }
    for p in ports:
        if not isinstance(p.get("port"), int):
            problems.append(f"{name}: port {p.get('port')!r} is not a number")
        target = p.get("targetPort", p.get("port"))
        if target not in named and target not in named.values():
            problems.append(f"{name}: targetPort {target!r} is no port of the selected pods")
    return problems


def problems_of(docs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for doc in docs:
        api, kind = doc.get("apiVersion"), doc.get("kind")
        name = doc.get("metadata", {}).get("name")
        if kind not in KINDS.get(str(api), set()):
            problems.append(f"{api}/{kind}: not a kind these manifests are checked for")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{kind}: metadata.name is required")
            continue
        if kind in WORKLOADS:
            problems += _check_workload(doc, docs)
        elif kind == "Service":
            problems += _check_service(doc, docs)
        elif kind in ("ConfigMap", "Secret"):
            values = _keys(doc)
            if not values:
                problems.append(f"{kind} {name}: no data")
    return problems


def test_the_manifests_are_complete_and_consistent() -> None:
    docs = manifests()
    assert problems_of(docs) == []
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "firmlog-server") in kinds
    assert ("StatefulSet", "firmlog-monitor") in kinds
    assert ("Service", "firmlog-server") in kinds


def test_the_server_gets_its_database_url_from_a_secret() -> None:
    server = next(
        d
        for d in manifests()
        if d["metadata"]["name"] == "firmlog-server" and d["kind"] == "StatefulSet"
    )
    (container,) = server["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FIRMLOG_DATABASE"]["valueFrom"]["secretKeyRef"] == {
        "name": "firmlog-database",
        "key": "url",
    }


def _server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = _find(docs, "StatefulSet", "firmlog-server")
    assert found is not None
    return found


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _server(docs)["spec"]["template"]["spec"]["containers"][0]
    return container


MUTATIONS: list[tuple[str, Callable[[list[dict[str, Any]]], None], str]] = [
    ("no readiness", lambda d: _container(d).pop("readinessProbe"), "readinessProbe: missing"),
    (
        "probe path",
        lambda d: _container(d)["livenessProbe"]["httpGet"].update(path="/"),
        "expected /healthz",
    ),
    (
        "secret key",
        lambda d: _container(d)["env"][0]["valueFrom"]["secretKeyRef"].update(key="uri"),
        "Secret firmlog-database has no key 'uri'",
    ),
    (
        "selector",
        lambda d: _server(d)["spec"]["selector"]["matchLabels"].update(tier="x"),
        "does not select its own pods",
    ),
    (
        "service port",
        lambda d: _find(d, "Service", "firmlog-server")["spec"]["ports"][0].update(  # type: ignore[index]
            targetPort="web"
        ),
        "targetPort 'web'",
    ),
    ("kind", lambda d: d[0].update(kind="Deploymnet"), "not a kind"),
    (
        "root",
        lambda d: _server(d)["spec"]["template"]["spec"].pop("securityContext"),
        "runAsNonRoot",
    ),
    (
        "headless",
        lambda d: _server(d)["spec"].update(serviceName="firmlog-server"),
        "headless Service",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_the_check_catches_a_broken_manifest(
    mutate: Callable[[list[dict[str, Any]]], None], expected: str
) -> None:
    docs = copy.deepcopy(manifests())
    mutate(docs)
    problems = problems_of(docs)
    assert any(expected in p for p in problems), problems
