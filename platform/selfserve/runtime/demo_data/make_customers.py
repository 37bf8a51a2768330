"""Regenerate ``customers.csv``, the demo's telco-churn-like sample: ``uv run python make_customers.py``.

The output is deterministic (seeded NumPy), so rerunning it leaves the committed file unchanged.
Churn depends on the features the way it tends to in subscription businesses, so that a model
trained on the demo data has something to learn: many support calls, a short tenure, the basic plan,
a high fee for the plan and the south region raise the odds of churning.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROWS = 2000
SEED = 20240601
SNAPSHOT = date(2025, 6, 30)  # tenure is counted up to this day; ``churned`` is what happened after it
FIRST_SIGNUP = date(2019, 1, 1)
PLANS = {"basic": 19.99, "standard": 39.99, "premium": 69.99}
PLAN_SHARE = [0.45, 0.35, 0.20]
PLAN_CHURN = {"basic": 0.5, "standard": 0.0, "premium": -0.4}
REGIONS = ["north", "south", "east", "west"]
REGION_SHARE = [0.3, 0.25, 0.25, 0.2]
REGION_CHURN = {"north": -0.1, "south": 0.35, "east": 0.0, "west": -0.15}
COLUMNS = [
    "customer_id",
    "signup_date",
    "plan",
    "monthly_fee",
    "tenure_months",
    "support_calls",
    "region",
    "churned",
]
OUT = Path(__file__).with_name("customers.csv")


def _months_between(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month - (end.day < start.day)


def rows(n: int = ROWS, seed: int = SEED) -> list[dict[str, object]]:
    """The sample as dicts in column order; the same ``seed`` always gives the same rows."""
    rng = np.random.default_rng(seed)
    span = (SNAPSHOT - FIRST_SIGNUP).days
    # More recent sign-ups than old ones: a growing business.
    offsets = (span * (1 - rng.power(1.6, n))).astype(int)
    plans = rng.choice(list(PLANS), size=n, p=PLAN_SHARE)
    regions = rng.choice(REGIONS, size=n, p=REGION_SHARE)
    out: list[dict[str, object]] = []
    for i in range(n):
        signup = SNAPSHOT - timedelta(days=int(offsets[i]) + 1)
        tenure = max(_months_between(signup, SNAPSHOT), 0)
        plan = str(plans[i])
        region = str(regions[i])
        # Promotions and add-ons move the fee around the plan's list price.
        add_ons = float(rng.choice([0.0, 5.0, 10.0], p=[0.6, 0.3, 0.1]))
        fee = max(round(PLANS[plan] * float(rng.normal(1.0, 0.12)) + add_ons, 2), 9.99)
        calls = int(rng.poisson(1.2 + (0.8 if plan == "basic" else 0.0) + (1.0 if tenure < 6 else 0.0)))
        logit = (
            -1.6
            + 0.55 * (calls - 1.5)
            - 0.045 * (tenure - 18)
            + PLAN_CHURN[plan]
            + 0.025 * (fee - PLANS[plan])
            + REGION_CHURN[region]
        )
        churned = int(rng.random() < 1 / (1 + np.exp(-logit)))
        out.append(
            {
                "customer_id": 100001 + i,
                "signup_date": signup.isoformat(),
                "plan": plan,
                "monthly_fee": f"{fee:.2f}",
                "tenure_months": tenure,
                "support_calls": calls,
                "region": region,
                "churned": churned,
            }
        )
    return out


def csv_text() -> str:
    """The whole file, header first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows())
    return out.getvalue()


def main() -> None:
    OUT.write_text(csv_text())
    print(f"wrote {ROWS} rows to {OUT}")


if __name__ == "__main__":
    main()
