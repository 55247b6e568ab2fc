"""Small hand-made data for tests that need images without the synthetic echo generator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.data.formats.recording import Recording
from common.data.sample import Split
from common.data.site_data import SiteData
from common.labels import Structure, labelled_vector


def blob_site(
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    labelled: frozenset[Structure] = frozenset(Structure),
    name: str = "blobs",
    split: str = "train",
) -> SiteData:
    """``n`` images with a bright-rimmed dark disc (LV), its ring (MYO) and a disc below (LA).

    Masks keep only ``labelled``; ``full_masks`` hold all three. Intensities are z-scored.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size), np.float32)
    masks = np.empty((n, size, size), np.uint8)
    full = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.45) * size, rng.uniform(0.35, 0.65) * size
        r = rng.uniform(0.12, 0.18) * size
        d = np.hypot(yy - cy, xx - cx)
        label = np.zeros((size, size), np.uint8)
        label[(d >= r) & (d < r + 0.08 * size)] = 2
        label[d < r] = 1
        la = np.hypot(yy - (cy + r + 0.22 * size), xx - cx) < 0.12 * size
        label[la & (label == 0)] = 3
        image = np.choose(label, [0.4, 0.05, 0.9, 0.1]) + rng.normal(0, 0.08, (size, size))
        images[i] = (image - image.mean()) / image.std()
        full[i] = label
        masks[i] = np.where(np.isin(label, [int(s) for s in labelled]), label, 0)
    vec = np.tile(labelled_vector(labelled), (n, 1))
    records = [
        {
            "case_id": f"c{i:03d}",
            "view": "4CH",
            "phase": "ED",
            "split": split,
            "frame": None,
            "quality": None,
            "spacing_mm": None,
        }
        for i in range(n)
    ]
    return SiteData(name, images, masks, vec, full, records)


def draw_labels(shape: tuple[int, int], contraction: float, tilt_deg: float = 0.0) -> np.ndarray:
    """uint8 (H, W) label map; ``contraction`` in [0, 1] shrinks the LV (0 = ED, 1 = ES)."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    base_row = 0.62 * height
    semi_rows = 0.34 * height * (1.0 - 0.15 * contraction)  # apex-to-centre half length
    semi_cols = 0.17 * width * (1.0 - 0.20 * contraction)
    centre_row = base_row - 0.6 * semi_rows
    theta = np.deg2rad(tilt_deg)
    x, y = cols - width / 2.0, rows - centre_row
    across = x * np.cos(theta) + y * np.sin(theta)
    along = -x * np.sin(theta) + y * np.cos(theta)
    below_base = along > base_row - centre_row
    wall = 0.06 * height * (1.0 + 0.3 * contraction)  # the wall thickens in systole
    lv = ((across / semi_cols) ** 2 + (along / semi_rows) ** 2 <= 1.0) & ~below_base
    outer = (across / (semi_cols + wall)) ** 2 + (along / (semi_rows + wall)) ** 2 <= 1.0
    myo = outer & ~lv & ~below_base
    la_centre = base_row - centre_row + 0.12 * height
    la = (across / (0.15 * width)) ** 2 + ((along - la_centre) / (0.11 * height)) ** 2 <= 1.0
    labels = np.zeros(shape, dtype=np.uint8)
    labels[la & below_base] = Structure.LA
    labels[myo] = Structure.MYO
    labels[lv] = Structure.LV
    return labels


def speckle_frame(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W) speckle-like B-mode image of a label map."""
    height, width = labels.shape
    echogenicity = np.array([0.45, 0.08, 0.9, 0.08])[labels]
    image = rng.rayleigh(1.0, labels.shape) * echogenicity * 90.0
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    angle = np.degrees(np.arctan2(cols - width / 2.0, rows + 1.0))
    image[np.abs(angle) > 35.0] = 0.0
    return np.clip(image, 0, 255).astype(np.uint8)


def build_recording(
    case_id: str,
    *,
    shape: tuple[int, int] = (48, 40),
    n_frames: int = 4,
    ed: int = 0,
    es: int = 2,
    spacing_mm: tuple[float, float] = (0.3, 0.15),
    split: Split = "train",
    view: str = "4CH",
    fps: float = 50.0,
    tilt_deg: float = 0.0,
    info: dict[str, str] | None = None,
    seed: int = 0,
) -> Recording:
    """A recording whose LV is largest at ``ed`` and smallest at ``es``."""
    rng = np.random.default_rng(seed)
    span = max(abs(es - ed), 1)
    labels = np.stack(
        [draw_labels(shape, min(abs(t - ed) / span, 1.0), tilt_deg) for t in range(n_frames)]
    )
    frames = np.stack([speckle_frame(m, rng) for m in labels])
    return Recording(
        case_id=case_id,
        frames=frames,
        labels=labels,
        ed=ed,
        es=es,
        spacing_mm=spacing_mm,
        fps=fps,
        view=view,
        split=split,
        info=dict(info or {}),
    )


class ProcessWatch:
    """The processes one test started, and whether any outlives it.

    While active, a background thread records every live process whose command line mentions
    one of ``markers`` (the test's own unique folders), their descendants and sessions
    (:func:`common.processes.family`). :meth:`leftovers` is what of that is still alive: other
    tests' or the machine's processes are never counted.
    """

    def __init__(self, *markers: str, poll: float = 0.3) -> None:
        import threading

        self.markers = [m for m in markers if m]
        self.poll = poll
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _record(self) -> None:
        from common.processes import family, process_table, processes_mentioning

        leaders = [p for m in self.markers for p in processes_mentioning(m)]
        table = process_table()
        for pid in family(leaders) if leaders else set():
            if pid in table and pid != os.getpid():
                self.seen.setdefault(pid, table[pid][2])

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            self._record()

    def __enter__(self) -> ProcessWatch:
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def leftovers(self, grace: float = 5.0) -> dict[int, str]:
        """Recorded processes still alive ``grace`` seconds after the test's own shutdown."""
        import time

        from common.processes import alive

        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in self.seen):
            time.sleep(0.2)
        return {p: c for p, c in self.seen.items() if alive(p)}


THREE_SITES = {"A": "camus-nifti", "B": "echonet-dynamic", "C": "hmc-qu"}  # all / LV / MYO


def three_site_federation(base: Path, seed: int) -> Path:
    """Tiny synthetic sites A {LV, MYO, LA}, B {LV}, C {MYO} under ``base/data`` and the
    simulation's partition -> site map ``base/sites.json`` (returned)."""
    import json

    from common.config import SiteSpec
    from common.data.synthetic.federation import FederationConfig, generate_federation

    generate_federation(
        FederationConfig.model_validate(
            {
                "seed": seed,
                "output_dir": str(base / "data"),
                "workers": 2,
                "sites": [
                    {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 8},
                    {"name": "B", "vendor": "B", "format": "echonet-dynamic", "cases": 8},
                    {"name": "C", "vendor": "C", "format": "hmc-qu", "cases": 4, "frames": 3},
                ],
            }
        ),
        progress=lambda _: None,
    )
    specs = [SiteSpec(name=n, format=f, root=base / "data" / n) for n, f in THREE_SITES.items()]
    path = base / "sites.json"
    path.write_text(json.dumps([s.model_dump(mode="json") for s in specs]))
    return path


def acquire_task_without_secret(address: str, ca_certificate: Path | None = None) -> str:
    """A local user's process asks a Flower Runtime API (a SuperNode's, or the SuperLink's over
    TLS with ``ca_certificate``) for a task, without the SuperExec secret: "refused: ..." or
    "accepted"."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.runtime import RuntimeHttpClient

    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=ca_certificate is None,
        root_certificates=None if ca_certificate is None else str(ca_certificate),
        interceptors=[],
    )
    import httpx

    try:
        client.AcquireTask(AcquireTaskRequest(supported_task_types=list(TaskType)))
    except (httpx.TransportError, OSError) as exc:  # nothing answered: not a refusal
        return f"unreachable: {exc}"
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return "accepted"


def minimal_site_config(folder: Path, **changes: object) -> Path:
    """``folder/A.toml``: the least a site file needs to load (its files need not exist);
    ``changes`` override or add keys (None drops one)."""
    import tomli_w

    config = {
        "site": "A",
        "coordinator": "127.0.0.1:9092",
        "ca_certificate": "ca.crt",
        "private_key": "site.key",
        "data_dir": str(folder),
        "format": "folder",
        **changes,
    }
    path = folder / "A.toml"
    path.write_text(tomli_w.dumps({k: v for k, v in config.items() if v is not None}))
    return path


def probe_app_pyproject(package: str, app_keys: str = "") -> str:
    """``pyproject.toml`` of a minimal Flower app ``probe`` whose ServerApp and ClientApp are
    ``<package>.app:server`` / ``:client``; ``app_keys``: more lines of ``[tool.flwr.app]``."""
    return (
        '[project]\nname = "probe"\nversion = "1.0.0"\n\n'
        f'[tool.flwr.app]\npublisher = "echofl"\n{app_keys}\n\n'
        "[tool.flwr.app.components]\n"
        f'serverapp = "{package}.app:server"\nclientapp = "{package}.app:client"\n'
    )
