"""Demo data for ``vre up --demo``: a public scope, a local RSE and a small dataset.

The events are synthetic dilepton invariant masses (a falling background plus a
narrow resonance), generated with a fixed seed so every laptop sees the same data.
"""

from __future__ import annotations

import io
import math
import random

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from vre.config import Settings
from vre.db import transaction
from vre.identity import accounts
from vre.lake import catalogue, rses, scopes, upload
from vre.lake.models import RSE, Scope

SCOPE, RSE_NAME = "demo", "DEMO-DISK"
DATASET, CONTAINER = "dilepton-2024", "dilepton"


def events_csv(run: int, count: int = 2000) -> bytes:
    rng = random.Random(run)
    out = io.StringIO()
    out.write("event,mll_gev,channel\n")
    for event in range(count):
        if rng.random() < 0.03:
            mass = rng.gauss(750.0, 15.0)
        else:
            mass = 200.0 - 120.0 * math.log(1.0 - rng.random())
        out.write(f"{event},{mass:.3f},{rng.choice(('ee', 'mumu'))}\n")
    return out.getvalue().encode()


def load_demo(sessions: sessionmaker[Session], settings: Settings) -> str:
    """Create the demo once; later calls find it and change nothing."""
    with transaction(sessions) as session:
        root = accounts.get(session, "root")
        if session.get(Scope, SCOPE) is not None:
            return f"scope '{SCOPE}' already loaded"
        storage_dir = settings.home / "storage" / RSE_NAME
        storage_dir.mkdir(parents=True, exist_ok=True)
        if session.scalar(select(RSE.id).where(RSE.name == RSE_NAME)) is None:
            rses.add(
                session, root, RSE_NAME, storage_dir.as_uri(), {"type": "disk", "site": "LOCAL"}
            )
        scopes.add(session, root, SCOPE, public=True)
        catalogue.add_collection(
            session,
            root,
            SCOPE,
            CONTAINER,
            "container",
            meta_values={"experiment": "synthetic", "year": 2024},
        )
    for run in (1, 2, 3):
        upload.upload(
            sessions,
            root,
            SCOPE,
            f"run{run:03d}/events.csv",
            RSE_NAME,
            [events_csv(run)],
            dataset=(SCOPE, DATASET),
            meta_values={"run": run, "kind": "data", "year": 2024},
        )
    with transaction(sessions) as session:
        catalogue.attach(session, root, SCOPE, CONTAINER, [(SCOPE, DATASET)])
    return (
        f"scope '{SCOPE}' (public), RSE {RSE_NAME} at {storage_dir},"
        f" dataset {SCOPE}:{DATASET} with 3 files in container {SCOPE}:{CONTAINER}"
    )
