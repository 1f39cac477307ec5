"""`StudioClient`: the app's only link to the backend, one typed method per `/api/v1` endpoint.

Every method returns `backend.schemas` models; every failure (unreachable API,
4xx/5xx, a malformed answer) raises `StudioAPIError` whose message is the
server's `detail`, readable as is in the UI.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from backend.schemas.common import JSONDict
from backend.schemas.comparison import ComparisonCreate, ComparisonPublic, ComparisonSummary
from backend.schemas.dataset import DatasetCreate, DatasetPreview, DatasetPublic, DatasetUploadPublic
from backend.schemas.environment import (
    EnvironmentCreate,
    EnvironmentImport,
    EnvironmentPublic,
    EnvironmentUpdate,
    EnvironmentVersionPublic,
    PromptPreview,
)
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.health import HealthPublic
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic
from backend.schemas.run import (
    CheckpointPublic,
    EvaluationPublic,
    MetricsPage,
    RunCreate,
    RunPublic,
    RunsPage,
)
from backend.schemas.tool import ToolCreate, ToolPublic, ToolTestRequest, ToolUpdate, ToolVersionPublic
from backend.schemas.trajectory import (
    LabelCreate,
    LabelImportReport,
    LabelPair,
    LabelPublic,
    LabelStats,
    TrajectoriesPage,
    TrajectoryPublic,
    TrajectorySummary,
)
from backend.schemas.user import LoginPublic, LoginRequest, Principal

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CLIENT_HEADER = "X-Studio-Client"
"""Sent on every request: the API refuses state-changing requests without it or a JSON body (CSRF guard)."""
T = TypeVar("T")


class StudioAPIError(Exception):
    """An API call failed; `str(error)` is the readable reason (the server's detail when it sent one)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        path: str = "",
        detail: str = "",
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.path = path
        self.detail = detail or message
        """The server's own words (without the HTTP status and path)."""
        self.retry_after_s = retry_after_s
        """The server's `Retry-After` (429: a sign-in lockout), in seconds."""


def format_detail(detail: Any) -> str:
    """`{"detail": ...}` → one readable line; pydantic 422 lists become `field: message; ...`."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _error_from_response(response: httpx.Response) -> StudioAPIError:
    try:
        body = response.json()
        detail = format_detail(body["detail"]) if isinstance(body, dict) and "detail" in body else response.text
    except ValueError:
        detail = response.text or response.reason_phrase
    path = response.request.url.path
    message = f"{detail} (HTTP {response.status_code} on {response.request.method} {path})"
    retry = response.headers.get("retry-after", "")
    return StudioAPIError(
        message,
        status_code=response.status_code,
        path=path,
        detail=detail,
        retry_after_s=int(retry) if retry.isdigit() else None,
    )


class StudioClient:
    """Synchronous client for the Agent Studio API; safe to share between Gradio handler threads."""

    def __init__(
        self,
        api_url: str,
        *,
        token: str = "",
        timeout_s: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {CLIENT_HEADER: "studio-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.api_url + API_PREFIX, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        files: dict[str, Any] | None = None,
        form: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            if files is not None:  # multipart (uploads)
                response = self._http.request(method, path, params=clean or None, files=files, data=form)
            else:
                response = self._http.request(method, path, params=clean or None, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise StudioAPIError(
                f"cannot reach the Agent Studio API at {self.api_url} ({exc.__class__.__name__}: {exc}); "
                "is it running? Start everything with `studio up`.",
                path=path,
            ) from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise StudioAPIError(f"the API sent a non-JSON answer on {path}", path=path) from exc

    def _get(self, kind: type[T] | Any, path: str, params: dict[str, Any] | None = None) -> T:
        return self._parse(kind, self._request("GET", path, params=params), path)

    def _post(self, kind: type[T] | Any, path: str, body: Any = None) -> T:
        return self._parse(kind, self._request("POST", path, body=body), path)

    @staticmethod
    def _parse(kind: type[T] | Any, data: Any, path: str) -> T:
        try:
            return TypeAdapter(kind).validate_python(data)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise StudioAPIError(
                f"unexpected answer from {path}: {exc.error_count()} schema error(s)", path=path
            ) from exc

    # ------------------------------------------------------------ health

    def health(self) -> HealthPublic:
        return self._get(HealthPublic, "/health")

    # ------------------------------------------------------------ accounts

    def login(self, name: str, secret: str, *, address: str | None = None) -> LoginPublic:
        """Exchange name + password (or name + token) for a bearer token; 401 or 429 → `StudioAPIError`.

        `address`: the browser's address, which the UI forwards so lockouts count per browser, not per UI.
        """
        headers = {"X-Studio-Login-Address": address} if address else None
        data = self._request(
            "POST", "/auth/login", body=LoginRequest(name=name, secret=secret).model_dump(), headers=headers
        )
        return self._parse(LoginPublic, data, "/auth/login")

    def whoami(self) -> Principal:
        return self._get(Principal, "/auth/me")

    # ------------------------------------------------------------ tools

    def list_tools(self) -> list[ToolPublic]:
        return self._get(list[ToolPublic], "/tools")

    def get_tool(self, tool_id: int) -> ToolPublic:
        return self._get(ToolPublic, f"/tools/{tool_id}")

    def create_tool(self, tool: ToolCreate) -> ToolPublic:
        return self._post(ToolPublic, "/tools", tool.model_dump(mode="json"))

    def update_tool(self, tool_id: int, update: ToolUpdate) -> ToolPublic:
        body = update.model_dump(mode="json", exclude_unset=True)
        return self._parse(ToolPublic, self._request("PATCH", f"/tools/{tool_id}", body=body), f"/tools/{tool_id}")

    def delete_tool(self, tool_id: int) -> None:
        self._request("DELETE", f"/tools/{tool_id}")

    def list_tool_versions(self, tool_id: int) -> list[ToolVersionPublic]:
        return self._get(list[ToolVersionPublic], f"/tools/{tool_id}/versions")

    def test_tool(self, tool_id: int, arguments: JSONDict) -> RunPublic:
        return self._post(RunPublic, f"/tools/{tool_id}/test", ToolTestRequest(arguments=arguments).model_dump())

    # ------------------------------------------------------------ datasets and environments

    def list_datasets(self) -> list[DatasetPublic]:
        return self._get(list[DatasetPublic], "/datasets")

    def create_dataset(self, dataset: DatasetCreate) -> DatasetPublic:
        return self._post(DatasetPublic, "/datasets", dataset.model_dump(mode="json"))

    def list_environments(self) -> list[EnvironmentPublic]:
        return self._get(list[EnvironmentPublic], "/environments")

    def create_environment(self, environment: EnvironmentCreate) -> EnvironmentPublic:
        return self._post(EnvironmentPublic, "/environments", environment.model_dump(mode="json"))

    def validate_environment(self, environment_id: int) -> RunPublic:
        return self._post(RunPublic, f"/environments/{environment_id}/validate")

    def upload_dataset(
        self,
        filename: str,
        content: bytes,
        *,
        name: str = "",
        kind: str = "tasks",
        format: str = "auto",
        question_column: str = "question",
        answer_column: str = "answer",
        id_column: str = "",
        dry_run: bool = False,
    ) -> DatasetUploadPublic:
        """Upload a task file or corpus (multipart); `dry_run` validates and previews without registering."""
        form = {
            "name": name,
            "kind": kind,
            "format": format,
            "question_column": question_column,
            "answer_column": answer_column,
            "id_column": id_column,
            "dry_run": str(dry_run).lower(),
        }
        data = self._request("POST", "/datasets/upload", files={"file": (filename, content)}, form=form)
        return self._parse(DatasetUploadPublic, data, "/datasets/upload")

    def preview_dataset(self, dataset_id: int, *, limit: int = 5) -> DatasetPreview:
        return self._get(DatasetPreview, f"/datasets/{dataset_id}/preview", {"limit": limit})

    def get_environment(self, environment_id: int) -> EnvironmentPublic:
        return self._get(EnvironmentPublic, f"/environments/{environment_id}")

    def update_environment(self, environment_id: int, update: EnvironmentUpdate) -> EnvironmentPublic:
        path = f"/environments/{environment_id}"
        body = update.model_dump(mode="json", exclude_unset=True)
        return self._parse(EnvironmentPublic, self._request("PATCH", path, body=body), path)

    def list_environment_versions(self, environment_id: int) -> list[EnvironmentVersionPublic]:
        return self._get(list[EnvironmentVersionPublic], f"/environments/{environment_id}/versions")

    def export_environment(self, environment_id: int, *, version: int | None = None) -> JSONDict:
        return self._get(JSONDict, f"/environments/{environment_id}/export", {"version": version})

    def import_environment(self, spec: JSONDict, *, name: str | None = None) -> EnvironmentPublic:
        body = EnvironmentImport(spec=spec, name=name).model_dump(mode="json")
        return self._post(EnvironmentPublic, "/environments/import", body)

    def render_prompt(self, environment_id: int, *, version: int | None = None) -> PromptPreview:
        return self._get(PromptPreview, f"/environments/{environment_id}/prompt", {"version": version})

    # ------------------------------------------------------------ runs

    def create_run(self, run: RunCreate) -> RunPublic:
        return self._post(RunPublic, "/runs", run.model_dump(mode="json"))

    def list_runs(
        self, *, status: str | None = None, kind: str | None = None, offset: int = 0, limit: int = 50
    ) -> RunsPage:
        params = {"status": status, "kind": kind, "offset": offset, "limit": limit}
        return self._get(RunsPage, "/runs", params)

    def get_run(self, run_id: int) -> RunPublic:
        return self._get(RunPublic, f"/runs/{run_id}")

    def cancel_run(self, run_id: int) -> RunPublic:
        return self._post(RunPublic, f"/runs/{run_id}/cancel")

    def resume_run(self, run_id: int) -> RunPublic:
        return self._post(RunPublic, f"/runs/{run_id}/resume")

    def get_metrics(self, run_id: int, *, since: int | None = None) -> MetricsPage:
        return self._get(MetricsPage, f"/runs/{run_id}/metrics", {"since": since})

    def list_checkpoints(self, run_id: int) -> list[CheckpointPublic]:
        return self._get(list[CheckpointPublic], f"/runs/{run_id}/checkpoints")

    def export_checkpoint(self, run_id: int, checkpoint_id: int) -> RunPublic:
        return self._post(RunPublic, f"/runs/{run_id}/checkpoints/{checkpoint_id}/export")

    def ping_worker(self) -> RunPublic:
        return self._post(RunPublic, "/runs/ping")

    def create_evaluation(self, evaluation: EvaluationCreate) -> RunPublic:
        """Launch an eval run (`POST /evaluations`)."""
        return self._post(RunPublic, "/evaluations", evaluation.model_dump(mode="json"))

    def get_evaluation(self, run_id: int) -> EvaluationPublic:
        return self._get(EvaluationPublic, f"/runs/{run_id}/evaluation")

    def create_comparison(self, comparison: ComparisonCreate) -> ComparisonPublic:
        """Launch checkpoints and baselines over the same examples (`POST /comparisons`)."""
        return self._post(ComparisonPublic, "/comparisons", comparison.model_dump(mode="json"))

    def list_comparisons(self, *, limit: int = 20) -> list[ComparisonSummary]:
        return self._get(list[ComparisonSummary], "/comparisons", {"limit": limit})

    def get_comparison(self, comparison_id: int) -> ComparisonPublic:
        return self._get(ComparisonPublic, f"/comparisons/{comparison_id}")

    # ------------------------------------------------------------ trajectories and labels

    def list_trajectories(
        self,
        *,
        run_id: int | None = None,
        step: int | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        has_parse_error: bool | None = None,
        has_tool_error: bool | None = None,
        truncated: bool | None = None,
        labeled: bool | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TrajectoriesPage:
        params: dict[str, Any] = {
            "run_id": run_id,
            "step": step,
            "min_reward": min_reward,
            "max_reward": max_reward,
            "has_parse_error": has_parse_error,
            "has_tool_error": has_tool_error,
            "truncated": truncated,
            "labeled": labeled,
            "offset": offset,
            "limit": limit,
        }
        for key, value in params.items():
            if isinstance(value, bool):
                params[key] = "true" if value else "false"
        return self._get(TrajectoriesPage, "/trajectories", params)

    def get_trajectory(self, trajectory_id: int) -> TrajectoryPublic:
        return self._get(TrajectoryPublic, f"/trajectories/{trajectory_id}")

    def create_label(self, trajectory_id: int, label: LabelCreate) -> LabelPublic:
        return self._post(LabelPublic, f"/trajectories/{trajectory_id}/labels", label.model_dump(mode="json"))

    def label_queue(self, run_id: int, *, limit: int = 20) -> list[TrajectorySummary]:
        return self._get(list[TrajectorySummary], f"/runs/{run_id}/label-queue", {"limit": limit})

    # ------------------------------------------------------------ pairwise labels and reward models (issue #15)

    def pair_queue(self, run_id: int, *, limit: int = 20) -> list[LabelPair]:
        return self._get(list[LabelPair], f"/runs/{run_id}/pair-queue", {"limit": limit})

    def label_stats(self, run_id: int) -> LabelStats:
        return self._get(LabelStats, f"/runs/{run_id}/labels/stats")

    def export_labels(self, run_id: int) -> str:
        """The run's labels as JSONL text (docs/labels-format.md)."""
        try:
            response = self._http.get(f"/runs/{run_id}/labels/export")
        except httpx.HTTPError as exc:
            raise StudioAPIError(f"cannot reach the Agent Studio API at {self.api_url} ({exc})") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response.text

    def import_labels(self, jsonl: str) -> LabelImportReport:
        try:
            response = self._http.post("/labels/import", content=jsonl.encode())
        except httpx.HTTPError as exc:
            raise StudioAPIError(f"cannot reach the Agent Studio API at {self.api_url} ({exc})") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return self._parse(LabelImportReport, response.json(), "/labels/import")

    def create_reward_model(self, rm_in: RewardModelCreate) -> RewardModelPublic:
        return self._post(RewardModelPublic, "/reward-models", rm_in.model_dump(mode="json"))

    def list_reward_models(self) -> list[RewardModelPublic]:
        return self._get(list[RewardModelPublic], "/reward-models")

    def get_reward_model(self, reward_model_id: int) -> RewardModelPublic:
        return self._get(RewardModelPublic, f"/reward-models/{reward_model_id}")
