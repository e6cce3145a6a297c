"""The /v1/secret/* handlers (KV version 2, the value under the key `value`) and the mount discovery
the `bao`/`vault` CLIs do before `kv get` (spec section 10).

  GET    secret/data/NAME[?version=N]   secret.read   {"data": {"data": {"value": ...}, "metadata": {...}}}
  POST   secret/data/NAME               secret.write  {"data": {"value": ...}, "options": {"cas": N}}
  GET    secret/metadata/NAME           secret.read   versions, current_version, times
  LIST   secret/metadata/[PREFIX]       secret.read   {"data": {"keys": [...]}} (folders end in `/`)
  DELETE secret/metadata/NAME           secret.write  every version removed (`kms-cli secret rm`)
  DELETE secret/data/NAME               refused (400): kms-cli has no soft delete of one version
  GET    sys/internal/ui/mounts/PATH    any secret (or transit) op: the mount, KV version 2

A value that is not UTF-8 cannot be a JSON string: its read is 400 (and audited as refused). A
version past its TTL reads as Vault's deleted version: 404 with its metadata (`deletion_time`).
"""

from __future__ import annotations

import re

from kms_cli import names
from kms_cli.errors import UsageError
from kms_cli.server.api import ApiError, Forbidden, Route
from kms_cli.server.transit import body_of, ignored, name_of, respond, rfc3339_nano, to_int
from kms_cli.vault import kv


def _version_meta(info: dict) -> dict:
    return {"created_time": rfc3339_nano(info["created"]), "custom_metadata": None,
            "deletion_time": rfc3339_nano(info["expires"]) if info["expires"] is not None else "",
            "destroyed": False, "version": info["version"]}


def _version_param(req) -> int | None:
    text = req.query.get("version")
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ApiError(400, f"invalid version {text[:20]!r}")
    return int(text) or None


def read(req):
    full = name_of(req)
    req.authorize("secret.read", full)
    info, value = kv.read(req.vault, full, _version_param(req))
    meta = _version_meta(info)
    if value is None:  # past its TTL: Vault's deleted version
        req.extra["status"] = 404
        return respond({"data": None, "metadata": meta})
    return respond({"data": {"value": value.reveal_text()}, "metadata": meta})


_WRITE = ("data", "options", "version")


def write(req):
    full = name_of(req)
    req.authorize("secret.write", full)
    body = body_of(req)
    data = body.get("data")
    if data is None or data == {}:
        raise ApiError(400, "no data provided")
    if not isinstance(data, dict):
        raise ApiError(400, "error converting input for field \"data\": expected a map")
    if set(data) != {"value"}:
        others = ", ".join(sorted(k for k in data if k != "value")[:5])
        raise ApiError(400, f"kms-cli keeps one value per secret, under the key \"value\"; not: {others}"
                       if others else "no data provided")
    value = data["value"]
    if not isinstance(value, str):
        raise ApiError(400, "the value must be a string (under the key \"value\")")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "error converting input for field \"options\": expected a map")
    cas = to_int(options.get("cas"), "cas")
    if cas is not None and cas < 0:
        raise ApiError(400, "check-and-set parameter did not match the current version")
    info = kv.write(req.vault, full, value.encode("utf-8", "surrogatepass"), cas)
    return respond(_version_meta(info), ignored(body, _WRITE))


def delete_data(req):
    full = name_of(req)
    req.authorize("secret.write", full)
    raise ApiError(400, "kms-cli has no soft delete of one version: DELETE /v1/secret/metadata/NAME "
                        "(bao kv metadata delete) removes the secret and all its versions")


def metadata(req):
    full = name_of(req)
    req.authorize("secret.read", full)
    m = kv.metadata(req.vault, full)
    versions = {str(v["version"]): {"created_time": rfc3339_nano(v["created"]),
                                    "deletion_time": rfc3339_nano(v["expires"]) if v["expires"] is not None else "",
                                    "destroyed": False}
                for v in m["versions"]}
    first = min((v["version"] for v in m["versions"]), default=0)
    return respond({
        "cas_required": False,
        "created_time": rfc3339_nano(m["created"]),
        "current_metadata_version": 0,
        "current_version": m["current_version"],
        "custom_metadata": None,
        "delete_version_after": "0s",
        "max_versions": 0,
        "metadata_cas_required": False,
        "oldest_version": first if first > 1 else 0,
        "updated_time": rfc3339_nano(m["updated"]),
        "versions": versions,
    })


def list_(req):
    prefix = (req.params.get("name") or "").strip("/")
    if prefix:
        try:
            names.validate(prefix)
        except UsageError as exc:
            raise ApiError(400, exc.message) from None
    req.authorize("secret.read", prefix)
    found = kv.list_names(req.vault, prefix)
    if not found:
        raise ApiError(404, "no secrets under " + (prefix + "/" if prefix else "secret/"))
    return respond({"keys": found})


def delete_metadata(req):
    full = name_of(req)
    req.authorize("secret.write", full)
    kv.delete(req.vault, full)
    return None  # 204, whether or not it existed (as Vault answers)


# -- mount discovery --------------------------------------------------------------------------------

_MOUNTS = {
    "secret": ("kv", "key/value secret storage", {"version": "2"}, ("secret.read", "secret.write")),
    "transit": ("transit", "kms-cli keys", None, ("encrypt", "decrypt", "rewrap", "datakey", "sign", "verify",
                                                  "key.read", "key.rotate")),
}


def mounts(req):
    """GET sys/internal/ui/mounts/PATH: the mount PATH lies in (what the CLIs ask before a kv call)."""
    path = (req.params.get("path") or "").strip("/")
    mount = path.split("/", 1)[0]
    if mount not in _MOUNTS:
        raise ApiError(403, "preflight capability check returned 403, please ensure client's policies grant "
                            f"access to path \"{path[:200]}/\"")
    type_, description, options, ops = _MOUNTS[mount]
    for op in ops:  # any operation on the mount may discover it; nothing about a name is said
        try:
            req.authorize(op, None)
            break
        except Forbidden:
            continue
    else:
        raise Forbidden(f"{ops[0]} on -")
    return respond({
        "accessor": f"{type_}_kmscli",
        "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
        "deprecation_status": "supported",
        "description": description,
        "external_entropy_access": False,
        "local": False,
        "options": options,
        "path": mount + "/",
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "seal_wrap": False,
        "type": type_,
        "uuid": "00000000-0000-0000-0000-00000000000" + ("1" if mount == "secret" else "2"),
    })


_NAME = r"(?P<name>[^?#]+?)"
ROUTES = [
    Route(("GET",), re.compile(rf"/v1/secret/data/{_NAME}"), read, writes=False),
    Route(("POST", "PUT"), re.compile(rf"/v1/secret/data/{_NAME}"), write),
    Route(("DELETE",), re.compile(rf"/v1/secret/data/{_NAME}"), delete_data),
    Route(("GET",), re.compile(rf"/v1/secret/metadata/{_NAME}"), metadata, writes=False),
    Route(("LIST",), re.compile(r"/v1/secret/metadata(?:/(?P<name>[^?#]*))?"), list_, writes=False),
    Route(("DELETE",), re.compile(rf"/v1/secret/metadata/{_NAME}"), delete_metadata),
    Route(("GET",), re.compile(r"/v1/sys/internal/ui/mounts/(?P<path>[^?#]+)"), mounts, writes=False),
]
