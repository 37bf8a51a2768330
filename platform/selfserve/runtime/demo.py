"""The demo content ``selfserve up`` seeds (``--no-demo`` skips it; ``selfserve demo`` reruns it).

Every step goes through the SDK and is idempotent: it creates what is missing and leaves what
exists alone, so seeding twice changes nothing. Later parts of the platform add their steps to
:data:`STEPS`.

The data steps upload ``demo_data/customers.csv`` (made by ``demo_data/make_customers.py``) as dataset
``customers`` with a contract, derive ``customer-features`` from it with a SQL transform, and publish
that as a data product. A user who cannot see the demo project (someone else's) skips them.

The pipeline steps register the directory of that CSV as a ``file`` source (``demo-files``) and deploy
the built-in ingest flow on an hourly schedule (``hourly-customers``), which reloads ``customers``
from it. The deployment is skipped, saying why, when pipelines are off or the server may not read the
directory (``file`` sources read only the directories an admin opened in ``data.file_roots``).

The model step deploys the built-in train flow (``train-churn``) on ``customer-features`` and starts
one run: it registers ``demo.churn`` and makes its best candidate champion; it is skipped, saying why,
when pipelines or models are off.

The serving step waits for that champion, serves it with BentoML (deployment ``churn-champion``)
behind route ``churn``, whose rows are filled from the feature view ``customers`` on
``customer-features`` (a request carries only a customer id), and sends it 200 predictions with the
true labels as feedback. The monitoring step watches that route (drift of its inputs against the
data the champion was trained on, every 15 minutes) and starts one run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from selfserve.errors import Conflict, NotFound, ServiceUnavailable

if TYPE_CHECKING:
    from selfserve.client import Client

PROJECT = "demo"
PROJECT_DESCRIPTION = "Demo project created by `selfserve up`"

DATA = Path(__file__).with_name("demo_data")
CUSTOMERS = "customers"
FEATURES = "customer-features"
FILES_SOURCE = "demo-files"
INGEST_FLOW = "hourly-customers"
INGEST_CRON = "0 * * * *"
# The request of every scheduled run: reload ``customers`` from the bundled CSV (its contract still applies).
INGEST_REQUEST = {"source": FILES_SOURCE, "table": "customers.csv", "to": CUSTOMERS, "mode": "overwrite"}

# What every later version of ``customers`` must satisfy.
CUSTOMERS_CONTRACT = """\
columns:
  customer_id: {type: integer, not_null: true, unique: true}
  signup_date: {type: date, not_null: true}
  plan: {type: string, not_null: true, allowed: [basic, standard, premium]}
  monthly_fee: {type: number, not_null: true, min: 0, max: 1000}
  tenure_months: {type: integer, not_null: true, min: 0}
  support_calls: {type: integer, not_null: true, min: 0}
  region: {type: string, allowed: [north, south, east, west]}
  churned: {type: integer, not_null: true, allowed: [0, 1]}
rows: {min: 1}
"""

# Model-ready features, one row per customer; ``churned`` is the label.
FEATURES_SQL = """\
select
    customer_id,
    plan,
    region,
    monthly_fee,
    tenure_months,
    support_calls,
    round(support_calls * 12.0 / greatest(tenure_months, 1), 3) as calls_per_year,
    round(monthly_fee - avg(monthly_fee) over (partition by plan), 2) as fee_above_plan_average,
    round(monthly_fee * tenure_months, 2) as lifetime_value,
    cast(tenure_months < 6 as integer) as is_new,
    churned
from customers
order by customer_id
"""


@dataclass(frozen=True)
class Seeded:
    """One piece of demo content and what seeding did to it."""

    what: str
    outcome: Literal["created", "exists", "skipped"]
    reason: str = ""

    def __str__(self) -> str:
        if self.outcome == "skipped":
            return f"{self.what}: skipped ({self.reason})"
        done = f"{self.what}: {'created' if self.outcome == 'created' else 'already there'}"
        return f"{done} ({self.reason})" if self.reason else done


def project(client: Client) -> Seeded:
    """The ``demo`` project, owned by the seeding user."""
    what = f"project {PROJECT}"
    try:
        client.projects.get(PROJECT)
        return Seeded(what, "exists")
    except NotFound:
        pass
    try:
        client.projects.create(PROJECT, description=PROJECT_DESCRIPTION)
    except Conflict:
        # Created meanwhile, or owned by someone this user cannot see: either way it exists.
        return Seeded(what, "exists")
    return Seeded(what, "created")


def _unseen(client: Client, what: str) -> Seeded | None:
    """A skip when the demo project is someone else's (invisible to this user), else None."""
    try:
        client.projects.get(PROJECT)
    except NotFound:
        return Seeded(what, "skipped", f"project {PROJECT} belongs to another user")
    return None


def _found(what: str, get: Callable[[], object]) -> Seeded | None:
    """``exists`` when ``get()`` finds the thing, ``skipped`` when the service it needs is off, else None."""
    try:
        get()
    except NotFound:
        return None
    except ServiceUnavailable as e:
        return Seeded(what, "skipped", str(e))
    return Seeded(what, "exists")


def _exists(client: Client, name: str) -> bool:
    try:
        client.datasets.get(PROJECT, name)
    except NotFound:
        return False
    return True


def customers(client: Client) -> Seeded:
    """Dataset ``customers``: the bundled telco-churn-like sample (2000 customers), uploaded as CSV."""
    what = f"dataset {PROJECT}/{CUSTOMERS}"
    if skip := _unseen(client, what):
        return skip
    if _exists(client, CUSTOMERS):
        return Seeded(what, "exists")
    client.datasets.upload(PROJECT, CUSTOMERS, DATA / "customers.csv", format="csv")
    return Seeded(what, "created")


def customers_contract(client: Client) -> Seeded:
    """The contract of ``customers``: types, allowed values and ranges every later version must pass."""
    what = f"contract on {PROJECT}/{CUSTOMERS}"
    if skip := _unseen(client, what):
        return skip
    if client.datasets.get(PROJECT, CUSTOMERS).has_contract:
        return Seeded(what, "exists")
    client.datasets.set_contract(PROJECT, CUSTOMERS, CUSTOMERS_CONTRACT)
    return Seeded(what, "created")


def customer_features(client: Client) -> Seeded:
    """Dataset ``customer-features``: a SQL transform of ``customers`` (its lineage names the version read)."""
    what = f"dataset {PROJECT}/{FEATURES}"
    if skip := _unseen(client, what):
        return skip
    if _exists(client, FEATURES):
        return Seeded(what, "exists")
    client.datasets.transform(PROJECT, FEATURES, sql=FEATURES_SQL)
    return Seeded(what, "created")


def features_product(client: Client) -> Seeded:
    """``customer-features`` published as a data product, so that other projects can ask to read it."""
    what = f"product {PROJECT}/{FEATURES}"
    if skip := _unseen(client, what):
        return skip
    if client.datasets.get(PROJECT, FEATURES).published:
        return Seeded(what, "exists")
    client.products.publish(
        PROJECT,
        FEATURES,
        description="Churn features per customer (usage, tenure, fees, support calls) with the churned label.",
        tags=["churn", "customers", "features", "demo"],
        sla_freshness="7d",
    )
    return Seeded(what, "created")


def files_source(client: Client) -> Seeded:
    """Source ``demo-files``: the directory of the bundled CSV as a ``file`` source, read on the server."""
    what = f"source {PROJECT}/{FILES_SOURCE}"
    if skip := _unseen(client, what):
        return skip
    if found := _found(what, lambda: client.sources.get(PROJECT, FILES_SOURCE)):
        return found
    client.sources.add(PROJECT, FILES_SOURCE, "file", {"path": str(DATA.resolve()), "format": "csv"})
    return Seeded(what, "created")


def hourly_ingest(client: Client) -> Seeded:
    """Flow deployment ``hourly-customers``: the built-in ingest of ``customers.csv`` into ``customers``, hourly."""
    what = f"flow {PROJECT}/{INGEST_FLOW}"
    if skip := _unseen(client, what):
        return skip
    if found := _found(what, lambda: client.flows.get(PROJECT, INGEST_FLOW)):
        return found
    try:
        client.runs.list(PROJECT, limit=1)  # answers 503 when pipelines are off
    except ServiceUnavailable as e:
        return Seeded(what, "skipped", str(e))
    readable = client.sources.test(PROJECT, FILES_SOURCE)
    if not readable.ok:
        # A schedule whose every run fails is no demo: say what to open instead.
        return Seeded(what, "skipped", f"the server cannot read source {FILES_SOURCE}: {readable.message}")
    try:
        client.flows.deploy_builtin(
            PROJECT,
            "ingest",
            INGEST_FLOW,
            parameters=INGEST_REQUEST,
            cron=INGEST_CRON,
            description=f"Reload {CUSTOMERS} from {FILES_SOURCE}/customers.csv every hour.",
        )
    except ServiceUnavailable as e:  # the engine went away meanwhile
        return Seeded(what, "skipped", str(e))
    return Seeded(what, "created")


MODEL = "churn"
TRAIN_FLOW = "train-churn"
# Train on the feature dataset; the customer id identifies a row and predicts nothing.
TRAIN_REQUEST = {
    "dataset": FEATURES,
    "target": "churned",
    "task": "classification",
    "metric": "f1",
    "candidates": ["rf", "linear"],
    "model": MODEL,
    "exclude": ["customer_id"],
}


def churn_model(client: Client) -> Seeded:
    """Model ``churn``: the built-in train flow deployed on ``customer-features`` and run once."""
    what = f"model {PROJECT}/{MODEL}"
    if skip := _unseen(client, what):
        return skip
    if found := _found(what, lambda: client.flows.get(PROJECT, TRAIN_FLOW)):
        return found
    try:
        client.models.list(PROJECT)  # answers 503 when models are off
        client.flows.deploy_builtin(
            PROJECT,
            "train",
            TRAIN_FLOW,
            parameters=TRAIN_REQUEST,
            description=f"Train {MODEL} on {FEATURES}; promote it when it beats the champion.",
        )
        run = client.flows.run(PROJECT, TRAIN_FLOW)
    except ServiceUnavailable as e:
        return Seeded(what, "skipped", str(e))
    return Seeded(what, "created", f"training run {run.id} started")


FEATURE_VIEW = "customers"
DEPLOYMENT = "churn-champion"
ROUTE = "churn"
DEMO_REQUESTS = 200
# The first training run starts Prefect's engine and MLflow's client on a busy machine: minutes at worst.
CHAMPION_WAIT_SECONDS = 600.0
READY_WAIT_SECONDS = 300.0


def _champion_now(client: Client) -> int | None:
    try:
        return client.models.get(PROJECT, MODEL).champion
    except NotFound:
        return None


def _champion(client: Client, timeout: float) -> int | str:
    """The champion's version once the demo's training run made one, or why there is none."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        champion = _champion_now(client)
        if champion is not None:
            return champion
        runs = client.runs.list(PROJECT, flow=TRAIN_FLOW, limit=1)
        if not runs:
            return f"no run of {TRAIN_FLOW} to make a champion"
        if runs[0].state in ("failed", "crashed", "cancelled", "completed"):
            # A completed run registers the champion just before it ends: look once more.
            champion = _champion_now(client)
            return champion if champion is not None else f"training run {runs[0].id} ended {runs[0].state}"
        if time.monotonic() > deadline:
            return f"training run {runs[0].id} is still {runs[0].state} after {timeout:.0f} s; rerun `selfserve demo`"
        time.sleep(2.0)


def churn_serving(client: Client) -> Seeded:
    """Route ``churn``: the champion of ``churn`` served by BentoML (deployment ``churn-champion``), its rows
    filled from feature view ``customers`` (so a request needs only a customer id), and some traffic with
    the true labels sent back as feedback, so the route's log and charts have content."""
    what = f"route {PROJECT}/{ROUTE}"
    if skip := _unseen(client, what):
        return skip
    if found := _found(what, lambda: client.routes.get(PROJECT, ROUTE)):
        return found
    try:
        champion = _champion(client, CHAMPION_WAIT_SECONDS)
        if isinstance(champion, str):
            return Seeded(what, "skipped", champion)
        if not any(v.name == FEATURE_VIEW for v in client.features.list(PROJECT)):
            client.features.create(PROJECT, FEATURE_VIEW, dataset=FEATURES, key="customer_id")
        if not any(d.name == DEPLOYMENT for d in client.deployments.list(PROJECT)):
            client.deployments.create(PROJECT, DEPLOYMENT, f"{MODEL}@champion")
        client.deployments.wait_ready(PROJECT, DEPLOYMENT, timeout=READY_WAIT_SECONDS)
        client.routes.create(PROJECT, ROUTE, DEPLOYMENT, feature_view=FEATURE_VIEW)
    except ServiceUnavailable as e:
        return Seeded(what, "skipped", str(e))
    sample = client.datasets.query(
        PROJECT,
        f"SELECT customer_id, churned FROM customer_features ORDER BY customer_id LIMIT {DEMO_REQUESTS}",
        limit=DEMO_REQUESTS,
    )
    labels = {}
    for customer_id, churned in sample.rows:
        answer = client.routes.predict(PROJECT, ROUTE, {"customer_id": customer_id})
        labels[answer.request_id] = churned
    client.routes.feedback(PROJECT, ROUTE, labels)
    return Seeded(
        what,
        "created",
        f"{len(labels)} predictions by {MODEL} v{champion} on deployment {DEPLOYMENT}, with their labels",
    )


MONITOR_SCHEDULE = "*/15 * * * *"


def churn_monitor(client: Client) -> Seeded:
    """A monitor on route ``churn``: its logged inputs against the data the champion was trained on, every
    15 minutes over the last hour, alerting when 30% of the columns drift; one run starts now."""
    what = f"monitor {PROJECT}/{ROUTE}"
    if skip := _unseen(client, what):
        return skip
    if found := _found(what, lambda: client.monitors.get(PROJECT, ROUTE)):
        return found
    try:
        client.routes.get(PROJECT, ROUTE)
    except (NotFound, ServiceUnavailable):
        return Seeded(what, "skipped", f"route {ROUTE} is not there")
    try:
        client.monitors.create(PROJECT, ROUTE, label="churned", schedule=MONITOR_SCHEDULE, window_seconds=3600)
        run_id = client.monitors.run(PROJECT, ROUTE)
    except ServiceUnavailable as e:
        return Seeded(what, "skipped", str(e))
    return Seeded(what, "created", f"every 15 minutes; first run {run_id} started")


STEPS: list[Callable[[Client], Seeded]] = [
    project,
    customers,
    customers_contract,
    customer_features,
    features_product,
    files_source,
    hourly_ingest,
    churn_model,
    churn_serving,
    churn_monitor,
]


def demo(client: Client) -> list[Seeded]:
    """Seed the demo content as the client's user; safe to run any number of times.

    Raises:
        SelfServeError: a step failed (e.g. ``Unauthenticated`` without a valid login); the steps
            before it stay done.
    """
    return [step(client) for step in STEPS]
