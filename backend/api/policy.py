"""The one access policy: (method, route path) -> the least role that may call it.

`authorize` (a router-wide dependency) looks every request up here, so route
modules carry no auth code; a route missing from this table is refused (403)
and `tests/backend/test_auth.py` fails, so a new route cannot slip through.
`None` marks a route anyone may call (the login exchange).
"""

from __future__ import annotations

from backend.schemas.user import Role

API_PREFIX = "/api/v1"

LABELER: Role = "labeler"
TRAINER: Role = "trainer"
ADMIN: Role = "admin"

ROUTE_POLICY: dict[tuple[str, str], Role | None] = {
    # health and accounts
    ("GET", "/health"): LABELER,
    ("POST", "/auth/login"): None,
    ("GET", "/auth/me"): LABELER,
    ("GET", "/users"): ADMIN,
    ("POST", "/users"): ADMIN,
    ("POST", "/users/{name}/disable"): ADMIN,
    # tools: code that runs on workers
    ("GET", "/tools"): TRAINER,
    ("POST", "/tools"): TRAINER,
    ("GET", "/tools/{tool_id}"): TRAINER,
    ("PATCH", "/tools/{tool_id}"): TRAINER,
    ("DELETE", "/tools/{tool_id}"): TRAINER,
    ("GET", "/tools/{tool_id}/versions"): TRAINER,
    ("POST", "/tools/{tool_id}/test"): TRAINER,
    # datasets and environments
    ("GET", "/datasets"): TRAINER,
    ("POST", "/datasets"): TRAINER,
    ("GET", "/datasets/{dataset_id}"): TRAINER,
    ("GET", "/datasets/{dataset_id}/preview"): TRAINER,
    ("POST", "/datasets/upload"): TRAINER,
    ("DELETE", "/datasets/{dataset_id}"): TRAINER,
    ("GET", "/environments"): TRAINER,
    ("POST", "/environments"): TRAINER,
    ("GET", "/environments/{environment_id}"): TRAINER,
    ("PATCH", "/environments/{environment_id}"): TRAINER,
    ("DELETE", "/environments/{environment_id}"): TRAINER,
    ("POST", "/environments/{environment_id}/validate"): TRAINER,
    ("POST", "/environments/import"): TRAINER,
    ("GET", "/environments/{environment_id}/versions"): TRAINER,
    ("GET", "/environments/{environment_id}/versions/{version}"): TRAINER,
    ("GET", "/environments/{environment_id}/export"): TRAINER,
    ("GET", "/environments/{environment_id}/prompt"): TRAINER,
    # runs: reading is for everyone, launching and steering for trainers
    ("GET", "/runs"): LABELER,
    ("POST", "/runs"): TRAINER,
    ("POST", "/runs/ping"): TRAINER,
    ("GET", "/runs/{run_id}"): LABELER,
    ("POST", "/runs/{run_id}/cancel"): TRAINER,
    ("POST", "/runs/{run_id}/resume"): TRAINER,
    ("GET", "/runs/{run_id}/metrics"): LABELER,
    ("GET", "/runs/{run_id}/checkpoints"): LABELER,
    ("POST", "/runs/{run_id}/checkpoints/{checkpoint_id}/export"): TRAINER,
    ("GET", "/runs/{run_id}/evaluation"): LABELER,
    ("POST", "/evaluations"): TRAINER,
    # comparisons: launching evaluates checkpoints and baselines (eval runs); reading is for everyone
    ("POST", "/comparisons"): TRAINER,
    ("GET", "/comparisons"): LABELER,
    ("GET", "/comparisons/{comparison_id}"): LABELER,
    # trajectories and labels
    ("GET", "/trajectories"): LABELER,
    ("GET", "/trajectories/{trajectory_id}"): LABELER,
    ("POST", "/trajectories/{trajectory_id}/labels"): LABELER,
    ("GET", "/runs/{run_id}/label-queue"): LABELER,
    ("GET", "/runs/{run_id}/labels/export"): LABELER,
    ("GET", "/runs/{run_id}/pair-queue"): LABELER,
    ("GET", "/runs/{run_id}/labels/stats"): LABELER,
    ("POST", "/labels/import"): LABELER,
    # reward models trained from labels: training one launches a job
    ("POST", "/reward-models"): TRAINER,
    ("GET", "/reward-models"): LABELER,
    ("GET", "/reward-models/{reward_model_id}"): LABELER,
}


def policy_for(method: str, path_format: str) -> tuple[bool, Role | None]:
    """(known, least role) for a route; `path_format` is the full template, e.g. /api/v1/runs/{run_id}."""
    key = (method.upper(), path_format.removeprefix(API_PREFIX))
    if key not in ROUTE_POLICY:
        return False, None
    return True, ROUTE_POLICY[key]
