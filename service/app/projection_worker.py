"""UMAP projections for the model pages, fitted and applied on a worker thread, never on the consumer loop.

``pages.projection: umap`` makes ``NlpmonService`` hand every model's projection to
:meth:`UmapProjections.apply` when it refreshes the reports (on the loop thread). ``apply`` never blocks:

* no fit yet for the model's profile: it queues one (the display-sample embeddings, copied) and returns the
  PCA block with ``requested: "umap"`` and a ``note`` ("UMAP fitting ..."): the page shows PCA meanwhile;
* a fit is ready: it queues the recent points (copied, with their PCA block) for ``transform`` and returns
  the newest finished UMAP block: the recent points as of the previous refresh (``as_of_event`` says which),
  so the loop never waits for a transform either;
* the fit failed, umap-learn is missing or the sample is larger than ``umap_max_reference``: PCA with a note
  saying why.

The worker thread does the fits and transforms, one job at a time, newest request per model first; each
model has at most one pending fit and one pending transform (a newer request replaces an older one), and at
most ``cached_models`` fitted maps are kept (least recently used leave). Fits are keyed by the profile object:
a model that gets a new reference is fitted anew. ``fit`` is injectable (tests); the default is
:func:`nlpmon.monitor.umap_projection.fit_umap` with the monitor seed (reproducible).

Thread safety: ``apply`` and ``close`` from one thread (the loop); the worker shares state with it only
under ``self._lock``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..monitor.page_view import Projection
from ..monitor.umap_projection import UmapModel, fit_umap, reference_embeddings, umap_block, umap_missing

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
Fit = Callable[[F32], UmapModel]

__all__ = ["UmapProjections"]


@dataclass
class _Entry:
    """One model's UMAP state."""

    profile: Any  # the profile the fit belongs to (held, so its identity is not reused)
    fitted: UmapModel | None = None
    error: str | None = None
    fitting: bool = False
    fit_seconds: float | None = None
    pending: tuple[F32, Projection, int] | None = None  # recent embeddings, their PCA projection, as-of event
    result: Projection | None = None  # the newest finished UMAP projection
    warned: bool = False  # a failed transform was logged


class UmapProjections:
    """Fits and applies UMAP per model on one worker thread. See the module docstring."""

    def __init__(self, *, seed: int = 0, n_neighbors: int = 15, max_reference: int = 2000, cached_models: int = 20,
                 fit: Fit | None = None, clock: Callable[[], float] | None = None) -> None:
        import time

        self.max_reference = max_reference
        self.cached_models = cached_models
        self._fit: Fit = fit or (lambda x: fit_umap(x, seed, n_neighbors))
        self._clock = clock or time.perf_counter
        self._missing = None if fit is not None else umap_missing()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._queue: OrderedDict[tuple[str, str], None] = OrderedDict()  # (key, "fit"|"transform"), FIFO
        self._fit_input: dict[str, F32] = {}  # reference embeddings of the queued fits
        self._busy = False
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.fit_threads: list[str] = []  # names of the threads fits ran on (tests check: never the loop's)

    # -- loop thread -----------------------------------------------------------------------------------------
    def apply(self, key: str, profile: Any, block: Projection | None, recent: F32, as_of_event: int,
              reference: Callable[[], F32] | None = None) -> Projection | None:
        """The projection block to report for model ``key``: UMAP when ready, else ``block`` (PCA) with a note.

        ``recent`` are the embeddings of ``block``'s current points (same order), ``as_of_event`` the
        monitored-event count they describe; ``reference`` returns the display-sample embeddings (called
        only when a fit is queued; default: read them from ``profile``). Never blocks on a fit or transform.
        """
        if block is None or profile is None:
            return block
        if self._missing is not None:
            return self._pca(block, self._missing)
        n_ref = len(block.reference.x)
        if n_ref > self.max_reference:
            return self._pca(block, f"UMAP is fitted on at most pages.umap_max_reference = {self.max_reference} "
                                    f"reference points; this display sample has {n_ref}")
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.profile is not profile:
                ref = (reference or (lambda: reference_embeddings(profile)))()
                if ref.shape[0] != n_ref:
                    return self._pca(block, "the reference sample has no embeddings for UMAP")
                entry = self._entries[key] = _Entry(profile, fitting=True)
                self._evict()
                self._enqueue(key, "fit", ref)
            self._entries.move_to_end(key)
            if entry.error is not None:
                return self._pca(block, f"UMAP failed: {entry.error}")
            if entry.fitted is None:
                return self._pca(block, f"UMAP fitting on {n_ref} reference points; showing PCA until it is ready")
            entry.pending = (np.array(recent, np.float32), block, as_of_event)
            self._enqueue(key, "transform", None)
            if entry.result is None:
                return self._pca(block, "UMAP transforming the recent points; showing PCA until they are ready")
            return entry.result

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (a fit in progress finishes first, up to ``timeout``)."""
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is queued or running (tests); False on timeout."""
        with self._lock:
            return self._wake.wait_for(lambda: not self._queue and not self._busy, timeout)

    # -- worker ---------------------------------------------------------------------------------------------
    def _pca(self, block: Projection, note: str) -> Projection:
        return replace(block, requested="umap", note=note)

    def _enqueue(self, key: str, job: str, ref: F32 | None) -> None:
        if ref is not None:
            self._fit_input[key] = ref
        self._queue.pop((key, job), None)
        self._queue[(key, job)] = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nlpmon-umap", daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _evict(self) -> None:
        while len(self._entries) > self.cached_models:
            old, _ = self._entries.popitem(last=False)
            for job in ("fit", "transform"):
                self._queue.pop((old, job), None)
            self._fit_input.pop(old, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._stop or bool(self._queue))
                if self._stop:
                    return
                (key, job), _ = self._queue.popitem(last=False)
                entry = self._entries.get(key)
                if entry is None:
                    continue
                self._busy = True
                ref = self._fit_input.pop(key, None) if job == "fit" else None
                pending, entry.pending = (entry.pending, None) if job == "transform" else (None, entry.pending)
                fitted = entry.fitted
            try:
                if job == "fit" and ref is not None:
                    self._do_fit(key, entry, ref)
                elif job == "transform" and pending is not None and fitted is not None:
                    recent, block, as_of = pending
                    xy = fitted.transform(recent)
                    result = umap_block(block, fitted.reference_xy, xy, as_of_event=as_of,
                                        fit_seconds=entry.fit_seconds)
                    with self._lock:
                        if self._entries.get(key) is entry:
                            entry.result = result
            except Exception as exc:  # a failed transform keeps the previous result; log once per model
                if job == "transform" and not entry.warned:
                    entry.warned = True
                    log.warning("UMAP transform for %s failed: %s", key, exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._wake.notify_all()

    def _do_fit(self, key: str, entry: _Entry, ref: F32) -> None:
        self.fit_threads.append(threading.current_thread().name)
        t0 = self._clock()
        try:
            fitted = self._fit(ref)
        except Exception as exc:
            with self._lock:
                entry.error, entry.fitting = str(exc).splitlines()[0] if str(exc) else type(exc).__name__, False
            log.warning("UMAP fit for %s failed: %s; its page shows PCA", key, entry.error)
            return
        with self._lock:
            entry.fitted, entry.fitting, entry.fit_seconds = fitted, False, round(self._clock() - t0, 3)
