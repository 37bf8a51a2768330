"""A background thread of the API that marks runs crashed when their launcher stops reporting."""

from __future__ import annotations

import logging
import threading
from typing import Any

from selfserve.pipelines import runner
from selfserve.settings import Settings
from selfserve.store import Store

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, settings: Settings, store: Store, pipelines: Any) -> None:
        self.settings = settings
        self.store = store
        self.pipelines = pipelines
        self.interval = max(min(settings.pipelines.lost_after / 3, 10.0), 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="selfserve-run-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> list[str]:
        with self.store.session() as session:
            ended = runner.reconcile(session, self.settings, self.pipelines.prefect)
            session.commit()
        for run_id in ended:
            log.warning("run %s lost its launcher; marked crashed", run_id)
        return ended

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as e:  # the engine or the DB is away for now: try again next round
                log.info("run reconciliation skipped: %s", e)
