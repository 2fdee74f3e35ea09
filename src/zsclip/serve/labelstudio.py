"""Label Studio's ML-backend protocol on ``zsclip serve --label-studio-url URL --label-studio-token TOKEN``.

Label Studio (Settings > Model > Connect model, URL = this server) speaks to a backend with four routes, as
label-studio-ml-backend defines them: ``GET /health`` ({"status": "UP"}), ``POST /setup`` (the project's
config; answers the ``model_version``), ``POST /predict`` ({"tasks", "label_config", ...} -> {"results": one
prediction per task: {"result", "score", "model_version"}}) and ``POST /webhook`` (project events; zsclip
trains nothing on them and says so).

The class list is the project's labelling config: the values of its ``Choices`` (``choice="multiple"``:
multi-label) or its ``Taxonomy`` (a label tree), for the ``Image`` (or ``Video``) tag they label; the templates
and head options are the server's. Images are fetched only from the Label Studio given on the command line,
with its token: a task's relative address (``/data/upload/...``, ``/data/local-files/?d=...``) is joined to
that URL, an absolute one must be on the same host, and redirects to another host are refused (the token
never leaves it). The host, token and ``access_token`` a ``/setup`` request carries are not used. Downloads
are bounded as uploads are (bytes, pixels, the request timeout).
"""

# no `from __future__ import annotations`: FastAPI reads the route closures' annotations at runtime

import asyncio
import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..data.urls import fetch_url
from ..errors import ImageReadError, ZsclipError
from ..hierarchy.tree import from_data
from ..job.heads import HeadOptions
from ..outputs.labelling import LabelSpace, model_version
from ..outputs.labelstudio import prediction_result
from .inputs import ClientError
from .work import ServerState, answer_images, decode_upload, make_head, resolve_classifier

OBJECT_TAGS = ("Image", "Video")


@dataclass(frozen=True)
class ProjectLabels:
    """What a labelling config asks for: the control tag's name, the object it labels and its data key,
    flat labels (``multi``: several per image) or a label tree."""

    from_name: str
    to_name: str
    data_key: str
    kind: str
    labels: tuple[str, ...] = ()
    tree: object = None


def parse_label_config(config: object, max_labels: int) -> ProjectLabels:
    """The first ``Choices`` / ``Taxonomy`` tag that labels an ``Image`` / ``Video`` of ``config``."""
    if not isinstance(config, str) or not config.strip():
        raise ClientError(422, "label_config is missing: send the project's labelling config")
    if "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise ClientError(422, "label_config holds a DOCTYPE or entities: a labelling config needs neither")
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as error:
        raise ClientError(422, f"label_config is not valid XML: {error}") from None
    objects = {element.get("name"): element for element in root.iter() if element.tag in OBJECT_TAGS}
    for control in root.iter():
        if control.tag not in ("Choices", "Taxonomy") or control.get("toName") not in objects:
            continue
        target = objects[control.get("toName")]
        key = (target.get("value") or "").lstrip("$")
        if not key:
            raise ClientError(422, f"the {target.tag} tag {target.get('name')!r} has no value=\"$field\"")
        names = [choice.get("value") or choice.get("alias") or "" for choice in control.iter("Choice")]
        if len(names) > max_labels:
            raise ClientError(422, f"the labelling config names {len(names)} choices, over the limit of {max_labels}")
        if control.tag == "Taxonomy":
            try:
                tree = from_data(_taxonomy(control), "the project's Taxonomy")
            except ZsclipError as error:
                raise ClientError(422, str(error)) from None
            return ProjectLabels(control.get("name"), target.get("name"), key, "tree", tree=tree)
        labels = tuple(name for name in names if name.strip())
        if len(labels) < 2:
            raise ClientError(422, "the project's Choices name fewer than two labels: add the classes to its config")
        kind = "multi" if control.get("choice") == "multiple" else "single"
        return ProjectLabels(control.get("name"), target.get("name"), key, kind, labels)
    raise ClientError(422, "the labelling config has no Choices or Taxonomy tag for an Image: zsclip classifies "
                           "whole images into the config's choices")


def _taxonomy(element: ElementTree.Element) -> dict:
    return {choice.get("value") or choice.get("alias"): (_taxonomy(choice) if choice.find("Choice") is not None
                                                        else None)
            for choice in element.findall("Choice")}


def image_address(value: object, base: str) -> str:
    """Where to fetch a task's image: only on ``base`` (the configured Label Studio)."""
    if not isinstance(value, str) or not value:
        raise ImageReadError("the task has no image address in its data")
    if value.startswith("/") and not value.startswith("//"):
        return base.rstrip("/") + value
    parts, home = urlsplit(value), urlsplit(base)
    if (parts.scheme.lower(), parts.netloc.lower()) != (home.scheme.lower(), home.netloc.lower()):
        raise ImageReadError("the image is not on the Label Studio this server was started with (--label-studio-url)"
                             "; zsclip fetches nothing else")
    return value


def install(app: FastAPI, settings, state_dependency) -> None:
    """The four routes on ``app`` (see module docstring). ``state_dependency(request)``: the ServerState.
    With --api-key they need it like every route (serve/guard.py), which Label Studio sends as the basic-auth
    password of the model connection."""
    base, token = settings.label_studio_url, settings.label_studio_token
    limits = settings.limits

    async def body(request: Request) -> dict:
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise ClientError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise ClientError(422, "the body must be a JSON object")
        return data

    def version(current: ServerState) -> str:
        return model_version({"model": current.encoder.name, "fingerprint": current.encoder.fingerprint})

    @app.get("/health", tags=["label studio"], summary="Label Studio ML backend: health")
    async def health(request: Request) -> dict:
        current = getattr(request.app.state, "zsclip", None)
        return {"status": "UP" if current is not None and not current.shutting_down else "DOWN",
                "model_class": "zsclip", "model_version": None if current is None else version(current)}

    @app.post("/setup", tags=["label studio"], summary="Label Studio ML backend: connect a project")
    async def setup(request: Request) -> dict:
        current = await state_dependency(request)
        data = await body(request)
        parse_label_config(data.get("schema"), limits.max_labels)  # refuse a config it cannot serve, now
        return {"model_version": version(current)}

    @app.post("/webhook", tags=["label studio"], summary="Label Studio ML backend: project events")
    async def webhook(request: Request) -> JSONResponse:
        data = await body(request)
        return JSONResponse({"status": "ignored", "action": str(data.get("action", ""))[:60],
                             "reason": "zsclip predicts zero-shot and trains nothing on events; fit a few-shot "
                                       "head with `zsclip adapt --data EXPORT.json`"}, status_code=200)

    @app.post("/predict", tags=["label studio"], summary="Label Studio ML backend: predictions for tasks")
    async def predict(request: Request) -> dict:
        current = await state_dependency(request)
        data = await body(request)
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ClientError(422, "tasks must be a non-empty list")
        project = parse_label_config(data.get("label_config"), limits.max_labels)
        # one class per line: a choice may hold a comma ("Dog, small")
        entry = await resolve_classifier(current, None if project.tree else ["\n".join(project.labels)], None, None,
                                         project.tree)
        options = HeadOptions(multi_label=True if project.kind == "multi" else None,
                              top_k=None if project.kind != "single" else 1)
        head = await make_head(current, entry, options, [])
        space = LabelSpace.of(head)
        results = []
        for start in range(0, len(tasks), limits.max_images):  # Label Studio may send many tasks at once
            chunk = tasks[start:start + limits.max_images]
            decoded = await asyncio.gather(*(fetch_task(current, task, project) for task in chunk))
            if all(isinstance(item, str) for item in decoded):
                content = {"results": [{"error": item} for item in decoded]}
            else:
                content = await answer_images(current, request.app.state.metrics, entry, head,
                                              [None] * len(chunk), decoded)
            for answer in content["results"]:
                results.append(ls_prediction(answer, space, project, version(current)))
        return {"results": results, "model_version": version(current)}

    async def fetch_task(current: ServerState, task: object, project: ProjectLabels):
        """A task's pixels, or why not (a per-task error: the task gets an empty prediction)."""
        try:
            address = image_address((task.get("data") or {}).get(project.data_key) if isinstance(task, dict)
                                     else None, base)
            payload = await asyncio.to_thread(fetch_url, address, limits.max_request_bytes,
                                              limits.request_timeout_s, {"Authorization": f"Token {token}"}, base)
        except ImageReadError as error:
            return str(error)
        return await decode_upload(current, address.rsplit("/", 1)[-1], payload)


def ls_prediction(answer: dict, space: LabelSpace, project: ProjectLabels, model: str) -> dict:
    """One task's prediction in Label Studio's shape, from a classify result (see work.answer_images)."""
    if answer.get("error") or not answer.get("predictions") and not answer.get("record"):
        return {"result": [], "score": 0.0, "model_version": model, "error": answer.get("error")}
    from ..heads.base import Prediction

    record = answer.get("record")
    if space.kind == "multi" and record is not None:
        prediction = Prediction("", list(record["labels"]), list(record["scores"]))
    else:
        prediction = Prediction("", [p["label"] for p in answer["predictions"]],
                                [p["score"] for p in answer["predictions"]])
    labelled = space.read(prediction)
    result = prediction_result(space, labelled)
    for item in result:
        item["from_name"], item["to_name"] = project.from_name, project.to_name
    return {"result": result, "score": round(labelled.score, 6), "model_version": model}


__all__ = ["install", "parse_label_config", "image_address", "ls_prediction", "ProjectLabels"]
