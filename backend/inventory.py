"""Everything a workspace created (locally or on AWS), and a cleanup in dependency order.

The workflow's executions go first (running ones stopped), its state machines and Lambda functions, then
endpoints (and, locally, their processes), configs, models, training jobs and their artifacts, IAM roles,
and last the data (staged images, capture, uploads, downloads) when asked for. Deleting twice is harmless: what is already gone is not listed.
Each backend brings the delete_* calls and, on AWS, `hourly_usd` for what bills by the hour.

On AWS the inventory also lists what carries the project tag without this workspace having created
it (another workspace's, or one whose records are lost), and IAM roles it adopted rather than
created. Such a resource is marked `created_here=False`; "everything" (cleanup with no targets)
leaves it, with the reason, and naming it deletes it. On AWS the default bucket is shared by every
workspace and project of the account and region: the data is what this workspace put there
(`_data_objects`), never everything under the prefixes.
"""
from __future__ import annotations

import re
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

from backend.api import RESOURCE_KINDS, CleanupReport, Resource, ResourceNotFound, SconesError, ValidationError
from backend.staging import MANIFEST, STAGED_KEYS, TEST_LST, TRAIN_LST, previously_listed
from backend.workflow_defs import UPLOAD_KEY_RE

CAPTURE_PREFIX = "data_capture/"
NOT_CREATED_HERE = "found by the project tag, not created by this workspace"
NOT_FOUND = "not found: already deleted, or never created"


def left_by_this_workspace(reason: str) -> bool:
    """A cleanup left it because it was refused or failed: not a name that was not there, nor what another
    workspace created (the Home page does not count those; `scones cleanup --yes` does not exit 2 for them)."""
    return reason != NOT_FOUND and not reason.startswith(NOT_CREATED_HERE)

# data resources: name -> (bucket prefixes, workspace folders)
DATA = {
    "staged-images": (("train/", "test/", "train.lst", "test.lst", "dataset.json", STAGED_KEYS), ()),
    "capture": ((CAPTURE_PREFIX,), ()),
    "workflow-uploads": (("uploads/",), ()),
    "archive-uploads": ((), ("uploads",)),
    "downloads": ((), ("downloads",)),
}


Users = dict[tuple[str, str], list[tuple[str, str]]]  # (kind, name) -> the (kind, name)s that use it


def served_by(endpoints: list[str], model: str) -> str:
    """Why a model is not deleted yet, naming every endpoint that serves it."""
    if len(endpoints) == 1:
        return f"Endpoint {endpoints[0]} serves model {model}: delete the endpoint first."
    return f"Endpoints {', '.join(endpoints)} serve model {model}: delete them first."


def blocked_by(kind: str, name: str, users: list[str]) -> str:
    """Why a config, a model or a training job is kept: what stays uses it (every user named)."""
    if kind == "model":
        return served_by(users, name)
    many = len(users) > 1
    if kind == "endpoint-config":
        return (f"Endpoint{'s' if many else ''} {', '.join(users)} use{'' if many else 's'} endpoint configuration "
                f"{name}: delete or update {'them' if many else 'the endpoint'} first.")
    return (f"Model{'s' if many else ''} {', '.join(users)} {'were' if many else 'was'} made from training job "
            f"{name}: delete {'them' if many else 'the model'} first.")


def callers_of(machines: list[Any], endpoint: str) -> list[str]:
    """The names of the state machines whose functions invoke `endpoint` (one that calls no function calls none)."""
    return [m.name for m in machines if m.functions and m.endpoint_name == endpoint]


def running_executions(running: int) -> str:
    """What deleting a state machine's executions interrupts, in a sentence ("" when none runs)."""
    if not running:
        return ""
    return (f"{running:,} execution{'s are' if running > 1 else ' is'} still running: deleting stops "
            f"{'them' if running > 1 else 'it'} first (they end ABORTED).")


class InventoryMixin:
    """inventory() and cleanup() over the backend's own list_*/delete_* methods."""

    def hourly_usd(self, kind: str, status: str, detail: Any) -> float | None:
        return None  # nothing bills by the hour locally

    def inventory_notes(self) -> list[str]:
        """What the last inventory could not look at (on AWS: a search the credentials may not make)."""
        return []

    def list_state_machines(self) -> list[Any]:
        return []

    def execution_counts(self, state_machine: str) -> tuple[int, int]:
        return 0, 0

    def list_lambda_functions(self) -> list[dict[str, Any]]:
        return []  # locally a function is a handler file run by the runtime: nothing to delete

    def role_resources(self) -> list[Resource]:
        return []  # locally nothing needs an IAM role

    def kept_execution_groups(self) -> list[str]:
        """State machine names that executions are kept under, machine deleted or not (`asl run`'s one-off runs
        too): locally they stay in the workspace's database until deleted. On AWS they go with their machine."""
        return []

    def executions_resource(self, state_machine: str) -> Resource | None:
        total, running = self.execution_counts(state_machine)
        if not total:
            return None
        return Resource("executions", state_machine, f"{total} ({running} running)", detail="executions and their history",
                        busy=running_executions(running))

    def _data_objects(self, name: str) -> list[Any]:
        """The bucket objects of data set `name`. In a bucket other projects may share (AWS's default
        sagemaker-<region>-<account>), only this workspace's: the images its lists name (with the lists
        and the manifest), the capture of the endpoints it deployed, the uploads it named."""
        objs = []
        for prefix in DATA[name][0]:
            listed = self.objects.list(prefix)
            objs += listed if prefix.endswith("/") else [o for o in listed if o.key == prefix]
        if not getattr(self.objects, "shared", False):
            return objs
        if name == "staged-images":
            ours = previously_listed(self.objects) | {TRAIN_LST, TEST_LST, MANIFEST, STAGED_KEYS}
            return [o for o in objs if o.key in ours]
        if name == "capture":
            folders = tuple(f"{CAPTURE_PREFIX}{e}/" for e in self.captured_endpoints())
            return [o for o in objs if o.key.startswith(folders)] if folders else []
        if name == "workflow-uploads":
            return [o for o in objs if UPLOAD_KEY_RE.fullmatch(o.key)]
        return objs

    def captured_endpoints(self) -> list[str]:
        """Endpoints whose capture folder is this workspace's (in a shared bucket)."""
        return [e.endpoint_name for e in self.list_endpoints()]

    def _prefix_size(self, prefix: str) -> tuple[int, int]:
        objs = self.objects.list(prefix)
        if not prefix.endswith("/"):
            objs = [o for o in objs if o.key == prefix]
        return len(objs), sum(o.size for o in objs)

    def inventory(self) -> list[Resource]:
        out: list[Resource] = []
        endpoints = self.list_endpoints()
        for e in endpoints:
            # The port, not the URL: pages write details as markdown, which made the URL a link to the endpoint's
            # root, a 404 (audit); its routes are /ping and /invocations.
            where = (f"local process on port {e.url.rsplit(':', 1)[-1]}" if e.url else "process gone") \
                if e.backend == "local" else e.backend
            out.append(Resource("endpoint", e.endpoint_name, e.status, hourly_usd=self.hourly_usd("endpoint", e.status, e),
                                detail=f"model {e.model_name}; {where}"))
        for c in self.list_endpoint_configs():
            out.append(Resource("endpoint-config", c.config_name, "Active", detail=f"model {c.model_name}"))
        for m in self.list_models():
            out.append(Resource("model", m.model_name, "Active", detail=f"from {m.job_name}"))
        for j in self.list_training_jobs():
            n, size = self._prefix_size(f"output/{j.job_name}/")
            out.append(Resource("training-job", j.job_name, j.status, size,
                                hourly_usd=self.hourly_usd("training-job", j.status, j), detail=f"{n} artifact file(s)"))
        machines = self.list_state_machines()
        endpoint_names = {e.endpoint_name for e in endpoints}
        for sm in machines:
            executions = self.executions_resource(sm.name)
            if executions is not None:
                out.append(executions)
            calls = ("calls no Lambda function" if not sm.functions else f"endpoint {sm.endpoint_name}"
                     + ("" if sm.endpoint_name in endpoint_names else " (no longer exists)"))
            out.append(Resource("state-machine", sm.name, "ACTIVE", detail=calls))
        machine_names = {sm.name for sm in machines}
        for name in self.kept_execution_groups():  # their machine deleted: nothing else lists them
            if name not in machine_names and (executions := self.executions_resource(name)) is not None:
                out.append(replace(executions, detail=f"{executions.detail}; no state machine of that name now"))
        for fn in self.list_lambda_functions():
            out.append(Resource("lambda-function", fn["FunctionName"], fn.get("State") or "Active",
                                size_bytes=fn.get("CodeSize"), detail=f"handler {fn.get('Handler')}, {fn.get('Runtime')}"))
        out += self.role_resources()
        out += self.data_resources()
        elsewhere = self.not_created_here(out)
        return [replace(r, created_here=False, detail=f"{r.detail}; {NOT_CREATED_HERE}")
                if (r.kind, r.name) in elsewhere else r for r in out]

    def data_resources(self) -> list[Resource]:
        """The workspace's data sets that hold files (staged images, capture, uploads, downloads): always its own."""
        out = []
        for name, (_, folders) in DATA.items():
            objs = self._data_objects(name)
            count, size = len(objs), sum(o.size for o in objs)
            for folder in folders:
                path = self.settings.home / folder
                if path.is_dir():
                    files = [p for p in path.rglob("*") if p.is_file()]
                    count, size = count + len(files), size + sum(p.stat().st_size for p in files)
            if count:
                out.append(Resource("data", name, f"{count} file(s)", size, is_data=True))
        return out

    def not_created_here(self, resources: list[Resource]) -> set[tuple[str, str]]:
        """(kind, name) of the resources this workspace did not create; locally it created everything."""
        return set()

    def cleanup_plan(self, targets: list[tuple[str, str]] | None = None, include_data: bool = False,
                     resources: list[Resource] | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """What a cleanup would delete, in dependency order, and what it would leave and why; `resources`:
        an inventory just taken (the Clean up page's), so a preview does not take another."""
        with self._describing_once():  # the inventory and the blockers read each resource once
            chosen, left, _ = self._plan(targets, include_data, resources)
        return chosen, left

    def state_machines_calling(self, endpoint: str) -> list[str]:
        """The state machines whose functions invoke `endpoint` (SconesError when they cannot be read)."""
        return callers_of(self.list_state_machines(), endpoint)

    def cleanup_warnings(self, going: list[tuple[str, str]], resources: list[Resource] | None = None) -> list[str]:
        """What deleting `going` (a plan's) would interrupt or break, one sentence each: running executions it
        stops, and endpoints that a state machine staying still calls (its executions would fail at the classify
        step; the Deploy page's Delete asks the same). `resources`: the inventory the plan was made from."""
        busy = {(r.kind, r.name): r.busy for r in (self.inventory() if resources is None else resources) if r.busy}
        out = [f"{kind}:{name}: {busy[kind, name]}" for kind, name in going if (kind, name) in busy]
        models = {name for kind, name in going if kind == "model"}
        if models:  # a config that stays would name a model that is gone (nothing said so: audit)
            try:
                configs = self.list_endpoint_configs()
            except SconesError:
                configs = []
            for model in sorted(models):
                staying = [c.config_name for c in configs
                           if c.model_name == model and ("endpoint-config", c.config_name) not in going]
                if staying:
                    one = len(staying) == 1
                    out.append(f"model:{model} is named by endpoint config{'' if one else 's'} {', '.join(staying)}, "
                               f"which stay{'s' if one else ''}: an endpoint made from {'it' if one else 'them'} would "
                               f"fail without its model. Tick {'it' if one else 'them'} too.")
        endpoints = sorted(name for kind, name in going if kind == "endpoint")
        if not endpoints:
            return out
        try:
            machines = self.list_state_machines()
        except SconesError as exc:
            return out + [f"Whether a state machine still calls {', '.join(endpoints)} could not be read ({exc}): "
                          "check the Workflow page before deleting."]
        for endpoint in endpoints:
            callers = [name for name in callers_of(machines, endpoint) if ("state-machine", name) not in going]
            if callers:
                one = len(callers) == 1
                out.append(f"endpoint:{endpoint} is called by {', '.join(callers)}, which stay{'s' if one else ''}: "
                           f"{'its' if one else 'their'} executions will fail at the classify step once it is gone. Tick "
                           f"{'it' if one else 'them'} too, or point the workflow at another endpoint first.")
        return out

    def _describing_once(self) -> AbstractContextManager:
        """A backend whose describes are remote calls reads each resource once within it (AWS)."""
        return nullcontext()

    def _plan(self, targets: list[tuple[str, str]] | None, include_data: bool, resources: list[Resource] | None = None
              ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]], Users]:
        """(what goes, in dependency order; what stays and why; what uses each resource)."""
        inventory = {(r.kind, r.name): r for r in (self.inventory() if resources is None else resources)}
        if targets is None:
            chosen = [k for k, r in inventory.items() if (include_data or not r.is_data) and r.created_here]
            left = [(r.kind, r.name, f"{NOT_CREATED_HERE}: name it to delete it ({r.kind}:{r.name})")
                    for r in inventory.values() if not r.created_here]
        else:
            for kind, _ in targets:
                if kind not in RESOURCE_KINDS:
                    raise ValidationError(f"Unknown kind {kind!r}: use one of {', '.join(RESOURCE_KINDS)}.")
            chosen = [t for t in targets if t in inventory]
            left = [(k, n, NOT_FOUND) for k, n in targets if (k, n) not in inventory]
        chosen.sort(key=lambda t: RESOURCE_KINDS.index(t[0]))
        users = self._users() if chosen else {}
        return (*self._without_blocked(chosen, left, users), users)

    @staticmethod
    def _without_blocked(chosen: list[tuple[str, str]], left: list[tuple[str, str, str]],
                         users: Users) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """Move to `left` what something staying still needs, so the plan (the dry run) says what the
        deletion will do: a config or a model an endpoint keeps using, a training job a kept model was made from."""
        going = set(chosen)
        kept = []
        for kind, name in chosen:  # dependency order: endpoints, configs, models, then training jobs
            staying = [u[1] for u in users.get((kind, name), ()) if u not in going and u[0] in ("endpoint", "model")]
            if kind not in ("endpoint-config", "model", "training-job") or not staying:
                kept.append((kind, name))
                continue
            going.discard((kind, name))
            left.append((kind, name, blocked_by(kind, name, staying)))
        return kept, left

    def cleanup(self, targets: list[tuple[str, str]] | None = None, include_data: bool = False) -> CleanupReport:
        """Delete `targets` ((kind, name) pairs), or everything when None (data only with include_data)."""
        with self._describing_once():
            chosen, left, users = self._plan(targets, include_data)
        deleted: list[tuple[str, str]] = []
        failed: set[tuple[str, str]] = set()
        for kind, name in chosen:  # dependency order: what uses a resource comes before it
            user = next((u for u in users.get((kind, name), ()) if u in failed), None)
            if user is not None:  # e.g. an endpoint that could not be deleted keeps its config and model
                failed.add((kind, name))
                left.append((kind, name, f"{user[0]} {user[1]} could not be deleted and still uses this "
                                         f"{kind}: delete the {user[0]} first."))
                continue
            try:
                self._delete(kind, name)
            except ResourceNotFound:  # gone meanwhile (deleted elsewhere, or its deletion just finished)
                left.append((kind, name, NOT_FOUND))
            except SconesError as exc:
                failed.add((kind, name))
                left.append((kind, name, str(exc)))
            else:
                deleted.append((kind, name))
        self.after_cleanup(deleted)
        # The workspace keeps the outcome for the Home page: a cleanup of names that were not there only is not one.
        self.record_cleanup(deleted, [x for x in left if left_by_this_workspace(x[2])])
        return CleanupReport(tuple(deleted), tuple(left))

    def _users(self) -> Users:
        """What uses each resource: an endpoint uses its config and its model, a config its model, a model
        the training job it was made from. A cleanup keeps a resource whose user failed to go."""
        users: Users = {}
        for e in self.live_endpoints():
            users.setdefault(("endpoint-config", e.config_name), []).append(("endpoint", e.endpoint_name))
            users.setdefault(("model", e.model_name), []).append(("endpoint", e.endpoint_name))
        for c in self.list_endpoint_configs():
            users.setdefault(("model", c.model_name), []).append(("endpoint-config", c.config_name))
        for m in self.list_models():
            users.setdefault(("training-job", m.job_name), []).append(("model", m.model_name))
        return users

    def live_endpoints(self) -> list[Any]:
        """The endpoints that still use their config and model: one Deleting (minutes on AWS) uses nothing."""
        return [e for e in self.list_endpoints() if e.status != "Deleting"]

    def after_cleanup(self, deleted: list[tuple[str, str]]) -> None:
        """A backend's own last step (locally: stop the Lambda workers and the gateway)."""

    def _delete(self, kind: str, name: str) -> None:
        if kind == "endpoint":
            self.delete_endpoint(name)
        elif kind == "endpoint-config":
            self.delete_endpoint_config(name)
        elif kind == "model":
            users = [e.endpoint_name for e in self.live_endpoints() if e.model_name == name]
            if users:
                raise ValidationError(served_by(users, name))
            self.delete_model(name)
        elif kind == "training-job":
            self.delete_training_job(name)
        elif kind == "executions":
            self.delete_executions(name)
        elif kind == "state-machine":
            self.delete_state_machine(name)
        elif kind == "lambda-function":
            self.delete_lambda_function(name)
        elif kind == "data":
            self._delete_data(name)
        else:
            raise ValidationError(f"Resources of kind {kind!r} are not deleted by the {self.name} backend.")

    def _delete_data(self, name: str) -> None:
        if name not in DATA:
            raise ResourceNotFound(f"No data set named {name!r}: use one of {', '.join(DATA)}.")
        _, folders = DATA[name]
        self.objects.delete_keys([o.key for o in self._data_objects(name)])
        for folder in folders:
            shutil.rmtree(self.settings.home / folder, ignore_errors=True)
        if name == "staged-images":
            self.db.execute("DELETE FROM datasets WHERE bucket=?", (self.objects.bucket,))
        if name == "capture":  # the compact index of what was read goes with the files
            shutil.rmtree(self.settings.home / "capture_index", ignore_errors=True)
