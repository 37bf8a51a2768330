from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, print_json
from selfserve.cli.dataset import print_rows

if TYPE_CHECKING:
    from selfserve.schemas.data import AccessPublic, ProductPublic

app = typer.Typer(
    help="Data products: datasets published to every user's catalog. Other projects request read access; "
    "the owners grant it.",
    no_args_is_help=True,
)
COLUMNS = ["product", "description", "tags", "owner", "freshness", "last_updated", "access"]
REQUEST_COLUMNS = ["id", "product", "consumer", "status", "requested_by", "reason", "decided_by", "created_at"]


class Status(StrEnum):
    requested = "requested"
    granted = "granted"
    denied = "denied"
    revoked = "revoked"


TagsOpt = typer.Option([], "--tag", "-t", help="A tag to find it by (repeatable).")
StatusOpt = typer.Option(None, "--status", "-s", help="Only requests in this state.")
IdArg = typer.Argument(..., metavar="ID", help="The request's id, from `product requests`.")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{suffix}"
    return f"{seconds:g}s"


def _row(p: ProductPublic) -> dict[str, Any]:
    sla = _duration(p.sla_freshness_seconds)
    return {
        **p.model_dump(),
        "product": f"{p.project}/{p.dataset}",
        "freshness": p.freshness + (f" ({sla})" if sla else ""),
    }


def _say(a: AccessPublic) -> None:
    typer.echo(f"access request {a.id}: {a.consumer} -> {a.product} is {a.status}")


@app.command("publish")
@handle_errors
def publish(
    project: str = typer.Argument(..., help="The project that owns the dataset."),
    dataset: str = typer.Argument(..., help="The dataset to publish."),
    description: str = typer.Option("", "--description", "-d", help="What the data is (default: the dataset's)."),
    sla_freshness: str | None = typer.Option(
        None, "--sla-freshness", metavar="DURATION", help="How fresh you promise it to stay, e.g. 24h or 7d."
    ),
    tags: list[str] = TagsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Publish a dataset (or update its listing): its metadata becomes visible in every user's catalog."""
    p = client().products.publish(project, dataset, description=description, tags=tags, sla_freshness=sla_freshness)
    if as_json:
        print_json(p)
        return
    typer.echo(f"published {p.project}/{p.dataset}; other projects can find it with `selfserve product search`")


@app.command("unpublish")
@handle_errors
def unpublish(project: str, dataset: str) -> None:
    """Take a dataset out of the catalog."""
    client().products.unpublish(project, dataset)
    typer.echo(f"unpublished {project}/{dataset}")


@app.command("search")
@handle_errors
def search(
    text: str = typer.Argument("", help="Words in the name, project, description or tags (default: all)."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Only products with this tag."),
    as_json: bool = JsonOpt,
) -> None:
    """Search the catalog of every project's published products (metadata only)."""
    found = client().products.search(text, tag=tag)
    if as_json:
        print_json(found)
        return
    # The caller's access shows once the catalog tells it.
    columns = COLUMNS if any(p.access for p in found) else COLUMNS[:-1]
    print_rows([_row(p) for p in found], columns, keep=("product",))


@app.command("request")
@handle_errors
def request(
    product: str = typer.Argument(..., metavar="PROJECT/DATASET", help="The product, as `product search` shows it."),
    for_project: str = typer.Option(..., "--for", help="Your project that wants to read it."),
    reason: str = typer.Option("", "--reason", "-r", help="What you need it for."),
    as_json: bool = JsonOpt,
) -> None:
    """Ask a product's owners for read access from one of your projects."""
    if product.count("/") != 1 or not all(product.split("/")):
        raise typer.BadParameter(f"{product!r} is not PROJECT/DATASET")
    a = client().products.request(product, for_project=for_project, reason=reason)
    if as_json:
        print_json(a)
        return
    _say(a)
    typer.echo("the owners of the product decide it")


@app.command("requests")
@handle_errors
def requests(
    project: str = typer.Argument(..., help="The project whose products were asked for."),
    status: Status | None = StatusOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Access requests for a project's products, newest first (owners)."""
    output(client().products.requests(project, status=status.value if status else None), as_json, REQUEST_COLUMNS)


def _decide(project: str, request_id: int, decision: str, as_json: bool) -> None:
    products = client().products
    decide = {"grant": products.grant, "deny": products.deny, "revoke": products.revoke}[decision]
    a = decide(project, request_id)
    if as_json:
        print_json(a)
        return
    _say(a)


@app.command("grant")
@handle_errors
def grant(project: str, request_id: int = IdArg, as_json: bool = JsonOpt) -> None:
    """Grant a request: the consumer project can read the product (in SQL as project.dataset)."""
    _decide(project, request_id, "grant", as_json)


@app.command("deny")
@handle_errors
def deny(project: str, request_id: int = IdArg, as_json: bool = JsonOpt) -> None:
    """Deny a pending request."""
    _decide(project, request_id, "deny", as_json)


@app.command("revoke")
@handle_errors
def revoke(project: str, request_id: int = IdArg, as_json: bool = JsonOpt) -> None:
    """Revoke granted access."""
    _decide(project, request_id, "revoke", as_json)
