"""An OpenAPI 3.0.3 description of the FHIR REST API, generated from the CapabilityStatement.

The FHIR API is one plain ASGI endpoint under /fhir (see app.py), so FastAPI's own
/openapi.json knows nothing of it. This module describes it for generic HTTP tooling
(schemathesis, API gateways, client generators) from the same sources the server answers
from: the CapabilityStatement (served types, interactions, search parameters) and the
search parameter registry (parameter types and descriptions).

The description is deliberately loose where FHIR is rich: request bodies are JSON objects
whose `resourceType` is the type in the path (any other property allowed; the server's
validator, not this document, decides what a valid resource is), and search parameter values
are plain strings (modifiers, prefixes and chains are FHIR syntax inside names and values).
Errors are documented as OperationOutcomes under `4XX` and `5XX`.
"""

from __future__ import annotations

from typing import Any

OPENAPI_VERSION = "3.0.3"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
# FHIR's id datatype: [A-Za-z0-9\-\.]{1,64}
ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
BUNDLE_TYPES = ["batch", "transaction"]
ENTRY_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


def openapi_document(capability: dict, search_registry, base_path: str = "/fhir") -> dict:
    """The OpenAPI 3.0.3 document for the FHIR API described by `capability`.

    `capability` is the server's CapabilityStatement (adapter.rest.capability); every
    resource type in its first `rest` entry gets the type and instance interactions it
    lists, with its `searchParam`s as optional string query parameters. `search_registry`
    (adapter.fhir.search_params.SearchRegistry) supplies each parameter's description.
    `base_path` is where the FHIR base is mounted; it becomes the document's server URL,
    so the paths themselves are relative to the FHIR base (`/Patient/{id}`).
    """
    rest = (capability.get("rest") or [{}])[0]
    paths: dict[str, Any] = {
        "/metadata": {"get": _metadata()},
        "/": {"post": _system_bundle(rest)},
    }
    types = []
    for resource in rest.get("resource", []):
        rtype = resource["type"]
        types.append(rtype)
        interactions = {i["code"] for i in resource.get("interaction", [])}
        # by name: today's CapabilityStatement lists _id and _lastUpdated twice per type
        unique = {p["name"]: p for p in reversed(resource.get("searchParam", []))}
        query = [_search_param(rtype, unique[name], search_registry) for name in sorted(unique)]
        paths.update(_type_paths(rtype, interactions, query, resource))
    software = capability.get("software", {})
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
              "description": "SMART Backend Services access token (SMART v2 system scopes)"}
    token_url = _token_url(rest)
    if token_url:
        bearer["description"] += f"; issued by the token endpoint {token_url} (OAuth2 client credentials " \
                                 "with a signed JWT client assertion)"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{software.get('name', 'FHIR server')} FHIR R4 API",
            "version": str(software.get("version", "0")),
            "description": "FHIR R4 (" + str(capability.get("fhirVersion", "4.0.1")) + ") REST API, "
                           "generated from the server's CapabilityStatement (GET /metadata is the "
                           "authoritative description). Responses are also available as "
                           "application/fhir+xml through Accept or _format.",
        },
        "servers": [{"url": base_path.rstrip("/") or "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in ["system", *types]],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": bearer},
            "schemas": _schemas(),
            "responses": {
                "Error": _content_response("An error, as an OperationOutcome", "OperationOutcome"),
            },
        },
    }


def _token_url(rest: dict) -> str | None:
    """The SMART token endpoint from CapabilityStatement.rest.security (the oauth-uris extension)."""
    for ext in (rest.get("security") or {}).get("extension", []):
        if ext.get("url", "").endswith("oauth-uris"):
            for sub in ext.get("extension", []):
                if sub.get("url") == "token":
                    return sub.get("valueUri")
    return None


# --- operations --------------------------------------------------------------------------------

def _type_paths(rtype: str, interactions: set[str], query: list[dict], resource: dict) -> dict:
    paths: dict[str, dict] = {}
    type_ops: dict[str, Any] = {}
    instance_ops: dict[str, Any] = {}
    id_param = _path_param("id", "Logical id of the resource")
    if "search-type" in interactions:
        type_ops["get"] = _op(f"search{rtype}", f"Search {rtype}", rtype, parameters=query,
                              responses={"200": _content_response(f"A searchset Bundle of {rtype}", "Bundle")})
        paths[f"/{rtype}/_search"] = {"post": _op(
            f"search{rtype}Post", f"Search {rtype} with the parameters in a form body", rtype,
            request_body={"required": False, "content": {FORM: {"schema": {
                "type": "object",
                "properties": {p["name"]: p["schema"] for p in query},
                "additionalProperties": {"type": "string"},
            }}}},
            responses={"200": _content_response(f"A searchset Bundle of {rtype}", "Bundle")})}
    if "create" in interactions:
        headers = []
        if resource.get("conditionalCreate"):
            headers.append(_header_param("If-None-Exist", "Conditional create: a search query (without '?')"))
        type_ops["post"] = _op(
            f"create{rtype}", f"Create a {rtype}", rtype, parameters=headers,
            request_body=_resource_body(rtype),
            responses={"201": _content_response(f"The {rtype} as stored", "Resource"),
                       "200": _content_response("Conditional create: the existing match", "Resource")})
    if "read" in interactions:
        instance_ops["get"] = _op(f"read{rtype}", f"Read a {rtype}", rtype,
                                  responses={"200": _content_response(f"The current {rtype}", "Resource")})
    if "update" in interactions:
        instance_ops["put"] = _op(
            f"update{rtype}", f"Update (or create) the {rtype} with this id", rtype,
            request_body=_resource_body(rtype, with_id=True),
            responses={"200": _content_response(f"The {rtype} as stored", "Resource"),
                       "201": _content_response(f"The {rtype} as created", "Resource")})
    if "patch" in interactions:
        instance_ops["patch"] = _op(
            f"patch{rtype}", f"Apply a JSON Patch to a {rtype}", rtype,
            request_body={"required": True, "content": {JSON_PATCH: {"schema": {"$ref": "#/components/schemas/JsonPatch"}}}},
            responses={"200": _content_response(f"The {rtype} as patched", "Resource")})
    if "delete" in interactions:
        instance_ops["delete"] = _op(f"delete{rtype}", f"Delete a {rtype}", rtype,
                                     responses={"204": {"description": "Deleted (or already absent)"},
                                                "200": _content_response("Deleted", "OperationOutcome")})
    if type_ops:
        paths[f"/{rtype}"] = type_ops
    if instance_ops:
        paths[f"/{rtype}/{{id}}"] = {"parameters": [id_param], **instance_ops}
    if "history-instance" in interactions:
        paths[f"/{rtype}/{{id}}/_history"] = {"parameters": [id_param], "get": _op(
            f"history{rtype}", f"History of a {rtype}", rtype, parameters=_history_params(),
            responses={"200": _content_response("A history Bundle", "Bundle")})}
    if "vread" in interactions:
        paths[f"/{rtype}/{{id}}/_history/{{vid}}"] = {
            "parameters": [id_param, _path_param("vid", "Version id")],
            "get": _op(f"vread{rtype}", f"Read a version of a {rtype}", rtype,
                       responses={"200": _content_response(f"That version of the {rtype}", "Resource")})}
    return paths


def _metadata() -> dict:
    return _op("capabilities", "The CapabilityStatement", "system",
               parameters=[_query_param("mode", "full | normative | terminology", enum=["full", "normative",
                                                                                         "terminology"])],
               responses={"200": _content_response("The CapabilityStatement", "CapabilityStatement")},
               security=[{}, {"bearer": []}])


def _system_bundle(rest: dict) -> dict:
    kinds = {i["code"] for i in rest.get("interaction", [])}
    bundle_types = [t for t in BUNDLE_TYPES if t in kinds] or BUNDLE_TYPES
    body = {"required": True, "content": {FHIR_JSON: {"schema": {
        "allOf": [{"$ref": "#/components/schemas/RequestBundle"}],
        "properties": {"type": {"type": "string", "enum": bundle_types}},
    }}}}
    return _op("batchOrTransaction", "Process a batch or transaction Bundle", "system", request_body=body,
               responses={"200": _content_response("The batch-response or transaction-response Bundle",
                                                   "Bundle")})


def _op(operation_id: str, summary: str, tag: str, parameters: list | None = None,
        request_body: dict | None = None, responses: dict | None = None, security: list | None = None) -> dict:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        op["parameters"] = parameters
    if request_body:
        op["requestBody"] = request_body
    op["responses"] = {**(responses or {}), "4XX": {"$ref": "#/components/responses/Error"},
                       "5XX": {"$ref": "#/components/responses/Error"}}
    if security is not None:
        op["security"] = security
    return op


# --- parameters --------------------------------------------------------------------------------

def _search_param(rtype: str, entry: dict, registry) -> dict:
    name = entry["name"]
    param = registry.get(rtype, name) if registry is not None else None
    description = entry.get("documentation") or (param.description if param else "") or ""
    kind = entry.get("type", "string")
    text = f"FHIR search parameter ({kind})" + (f": {description}" if description else "")
    return _query_param(name, text)


def _query_param(name: str, description: str, enum: list[str] | None = None) -> dict:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _header_param(name: str, description: str) -> dict:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": ID_PATTERN}}


def _history_params() -> list[dict]:
    return [_query_param("_count", "Page size"), _query_param("_since", "Only versions after this instant"),
            _query_param("_at", "Only versions current at this time")]


# --- bodies and schemas ------------------------------------------------------------------------

def _resource_body(rtype: str, with_id: bool = False) -> dict:
    properties: dict[str, Any] = {"resourceType": {"type": "string", "enum": [rtype]}}
    if with_id:
        properties["id"] = {"type": "string", "pattern": ID_PATTERN}
    schema = {"allOf": [{"$ref": "#/components/schemas/Resource"}], "type": "object",
              "required": ["resourceType"], "properties": properties, "additionalProperties": True}
    return {"required": True, "content": {FHIR_JSON: {"schema": schema}}}


def _content_response(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _schemas() -> dict:
    return {
        "Resource": {
            "type": "object",
            "description": "Any FHIR resource (validated by the server, not by this document)",
            "required": ["resourceType"],
            "properties": {
                "resourceType": {"type": "string"},
                "id": {"type": "string"},
                "meta": {"type": "object"},
            },
            "additionalProperties": True,
        },
        "Bundle": {
            "allOf": [{"$ref": "#/components/schemas/Resource"}],
            "type": "object",
            "required": ["resourceType", "type"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["Bundle"]},
                "type": {"type": "string"},
                "total": {"type": "integer", "minimum": 0},
                "link": {"type": "array", "items": {"type": "object"}},
                "entry": {"type": "array", "items": {"type": "object"}},
            },
        },
        "RequestBundle": {
            "type": "object",
            "required": ["resourceType", "type"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["Bundle"]},
                "type": {"type": "string", "enum": BUNDLE_TYPES},
                "entry": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "fullUrl": {"type": "string"},
                        "resource": {"$ref": "#/components/schemas/Resource"},
                        "request": {
                            "type": "object",
                            "required": ["method", "url"],
                            "properties": {"method": {"type": "string", "enum": ENTRY_METHODS},
                                           "url": {"type": "string"},
                                           "ifNoneExist": {"type": "string"},
                                           "ifMatch": {"type": "string"}},
                        },
                    },
                }},
            },
            "additionalProperties": True,
        },
        "CapabilityStatement": {
            "allOf": [{"$ref": "#/components/schemas/Resource"}],
            "type": "object",
            "required": ["resourceType", "fhirVersion", "rest"],
            "properties": {"resourceType": {"type": "string", "enum": ["CapabilityStatement"]},
                           "fhirVersion": {"type": "string"},
                           "rest": {"type": "array", "items": {"type": "object"}}},
        },
        "OperationOutcome": {
            "type": "object",
            "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                "issue": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {"severity": {"type": "string",
                                                "enum": ["fatal", "error", "warning", "information"]},
                                   "code": {"type": "string"},
                                   "diagnostics": {"type": "string"}},
                }},
            },
        },
        "JsonPatch": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
        },
    }
