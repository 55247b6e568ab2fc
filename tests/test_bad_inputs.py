"""The bad-input catalogue (docs/reliability.md): every malformed input a hospital, coordinator
or researcher can hand echofl gives a clear error naming the problem (and the file), a non-zero
exit for commands, no traceback, and no partial output.

Each case prepares a small valid set-up, breaks one thing, runs the real command entry point
in-process and checks its exit code and message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.config import SiteSpec
from common.data.formats import write_site
from common.errors import ConfigError
from common.federation.run_settings import parse_run_settings
from common.security.checkpoint import save_checkpoint
from common.security.pki import init_pki, load_signing_key
from fl_client import cli as fl_client_cli
from fl_server import cli as fl_server_cli
from simulations import centralised
from simulations import run as harness
from tests.helpers import build_recording


@dataclass
class Env:
    root: Path
    pki: object
    site_dir: Path
    data: dict[str, Path]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("bad")
    pki = init_pki(root / "pki", ["localhost"], ["A"])
    recordings = [
        build_recording(f"patient000{i}", shape=(48, 40), split=s, seed=i)
        for i, s in enumerate(["train", "train", "val", "test"], start=1)
    ]
    data = {
        fmt: write_site(
            fmt,
            root / "data" / fmt,
            recordings,
            labelled=None if fmt != "folder" else ["LV", "MYO", "LA"],
        )
        for fmt in ("camus-nifti", "folder")
    }
    data["echonet-dynamic"] = write_site("echonet-dynamic", root / "data" / "echonet", recordings)
    data["hmc-qu"] = write_site("hmc-qu", root / "data" / "hmcqu", recordings)
    return Env(root, pki, root / "sites", data)


def site_config(
    env: Env,
    tmp: Path,
    *,
    data: Path | None = None,
    fmt: str = "camus-nifti",
    port: int = 9,
    **override: object,
) -> Path:
    """A valid site config (the coordinator at a closed loopback port), with overrides."""
    key = tmp / "site.key"
    if not key.exists():
        key.write_bytes(env.pki.site_key("A").read_bytes())  # type: ignore[attr-defined]
        key.chmod(0o600)
    config = {
        "site": "A",
        "coordinator": f"127.0.0.1:{port}",
        "ca_certificate": str(env.pki.ca_cert),  # type: ignore[attr-defined]
        "private_key": str(key),
        "data_dir": str(data or env.data[fmt]),
        "format": fmt,
        "cache_dir": str(tmp / "cache"),
        "max_retries": 0,
    }
    config.update(override)
    path = tmp / "A.toml"
    path.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in config.items() if v is not None) + "\n"
    )
    return path


def copy_site(env: Env, fmt: str, tmp: Path) -> Path:
    import shutil

    return Path(shutil.copytree(env.data[fmt], tmp / f"copy-{fmt}"))


def run_main(
    main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --------------------------------------------------------------------------------------------
# data given to fl-client (the pre-flight check reads every file)


def corrupt_label(env: Env, tmp: Path) -> tuple[Path, str]:
    site = copy_site(env, "camus-nifti", tmp)
    path = site / "database_nifti" / "patient0002" / "patient0002_4CH_ED_gt.nii.gz"
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).copy()
    arr[5, 5] = 7
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(path))
    return site, "patient0002_4CH_ED_gt.nii.gz: mask has label value(s) 7 outside the schema"


def missing_mask(env: Env, tmp: Path) -> tuple[Path, str]:
    site = copy_site(env, "camus-nifti", tmp)
    (site / "database_nifti" / "patient0001" / "patient0001_4CH_ES_gt.nii.gz").unlink()
    return site, "patient0001_4CH_ES_gt.nii.gz: missing ground-truth mask for image"


def truncated_nifti(env: Env, tmp: Path) -> tuple[Path, str]:
    site = copy_site(env, "camus-nifti", tmp)
    path = site / "database_nifti" / "patient0003" / "patient0003_4CH_ED.nii.gz"
    path.write_bytes(path.read_bytes()[:60])
    return site, "patient0003_4CH_ED.nii.gz: unreadable NIfTI file"


def empty_site(env: Env, tmp: Path) -> tuple[Path, str]:
    (tmp / "empty").mkdir()
    return tmp / "empty", "empty: no database_nifti/ folder: not a CAMUS NIfTI tree"


DATA_CASES = {
    "label value outside the schema": ("camus-nifti", corrupt_label),
    "missing mask file": ("camus-nifti", missing_mask),
    "truncated NIfTI image": ("camus-nifti", truncated_nifti),
    "site folder with no data": ("camus-nifti", empty_site),
}


@pytest.mark.parametrize(
    "case",
    [
        "label value outside the schema",
        "missing mask file",
        "truncated NIfTI image",
        "site folder with no data",
        "EchoNet tracing with too few rows",
        "HMC-QU .mat without the predicted key",
        "folder manifest with a typo",
        "folder format with a JPEG (lossy) mask",
    ],
)
def test_bad_data_is_refused_before_connecting(
    case: str, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fmt, make = DATA_CASES[case]
    site, message = make(env, tmp_path)
    config = site_config(env, tmp_path, data=site, fmt=fmt)
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2 and message in output and "Traceback" not in output, output
    assert not list((tmp_path / "cache").glob("A/*")) or all(
        (p / "manifest.json").exists()
        for p in (tmp_path / "cache" / "A").iterdir()
        if not p.name.startswith(".")
    )  # no half-written cache entry


def tracing_too_few_rows(env: Env, tmp: Path) -> tuple[Path, str]:
    site = copy_site(env, "echonet-dynamic", tmp)
    path = site / "VolumeTracings.csv"
    lines = path.read_text().splitlines()
    name, frame = lines[1].split(",")[0], lines[1].split(",")[-1]
    kept = [ln for ln in lines if not (ln.startswith(name + ",") and ln.endswith("," + frame))]
    extra = [ln for ln in lines if ln.startswith(name + ",") and ln.endswith("," + frame)][:2]
    path.write_text("\n".join(kept + extra) + "\n")
    return site, "a traced frame needs at least 3 (long axis + 2 chords)"


def mat_without_key(env: Env, tmp: Path) -> tuple[Path, str]:
    import scipy.io

    site = copy_site(env, "hmc-qu", tmp)
    mat = next((site / "LV Ground-truth Segmentation Masks").glob("*.mat"))
    scipy.io.savemat(mat, {"other": np.zeros((2, 4, 4), np.uint8)})
    return site, "no variable 'predicted' in the .mat file"


def manifest_typo(env: Env, tmp: Path) -> tuple[Path, str]:
    site = copy_site(env, "folder", tmp)
    manifest = site / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("labelled", "labeled"))
    return site, "manifest.toml: invalid manifest: unknown key 'labeled' (did you mean 'labelled'?"


def jpeg_mask(env: Env, tmp: Path) -> tuple[Path, str]:
    from PIL import Image

    site = copy_site(env, "folder", tmp)
    png = site / "masks" / "patient0001_4CH_ED.png"
    Image.open(png).convert("L").save(site / "masks" / "patient0001_4CH_ED.jpg", quality=90)
    index = site / "index.csv"
    index.write_text(
        index.read_text().replace("masks/patient0001_4CH_ED.png", "masks/patient0001_4CH_ED.jpg")
    )
    return site, "patient0001_4CH_ED.jpg: JPEG masks are refused: lossy compression"


DATA_CASES |= {
    "EchoNet tracing with too few rows": ("echonet-dynamic", tracing_too_few_rows),
    "HMC-QU .mat without the predicted key": ("hmc-qu", mat_without_key),
    "folder manifest with a typo": ("folder", manifest_typo),
    "folder format with a JPEG (lossy) mask": ("folder", jpeg_mask),
}


# --------------------------------------------------------------------------------------------
# the site's configuration file


CONFIG_CASES = {
    "typo in a key": ({"data_dri": "/x"}, "data_dri: unknown key (typo?)"),
    "wrong type": ({"runtime_port": "ninety"}, "runtime_port: Input should be a valid integer"),
    "impossible port": ({"runtime_port": 80}, "runtime_port: Input should be greater than"),
    "unknown format": ({"format": "dicom"}, "unknown format 'dicom'"),
    "unknown structure": ({"labelled": ["LV", "RV"]}, "unknown structure 'RV'"),
    "missing required key": ({"coordinator": None}, "coordinator: Field required"),
    "coordinator without a port": ({"coordinator": "localhost"}, "coordinator: String should"),
    "pinned app that is not a hash": (
        {"trusted_apps": ["echofl-1.0"]},
        "trusted_apps.0: 'echofl-1.0' is not an app bundle hash (SHA-256: 64",
    ),
    "task timeout of zero": (
        {"task_timeout_s": 0},
        "task_timeout_s: Input should be greater than 0",
    ),
    "unknown task start": (
        {"task_start": "thread"},
        "task_start: Input should be 'fork' or 'spawn'",
    ),
}


def test_unknown_loader_option(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = site_config(env, tmp_path)
    config.write_text(config.read_text() + "[loader_options]\nfold = 3\n")
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2 and "unknown loader option(s) fold; known: views, use_half_sequence" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_site_config(
    case: str, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override, message = CONFIG_CASES[case]
    config = site_config(env, tmp_path, **override)
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2 and message in output and "A.toml" in output, output
    assert "Traceback" not in output


def test_config_for_another_site_missing_file_and_bad_toml(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = site_config(env, tmp_path)
    code, output = run_main(fl_client_cli.main, ["--site", "B", "--config", str(config)], capsys)
    assert code == 2 and "configures site 'A', not 'B'" in output
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config-dir", str(tmp_path / "nowhere")], capsys
    )
    assert code == 2 and "config file not found" in output and "nowhere" in output
    config.write_text('site = "A\n')
    code, output = run_main(fl_client_cli.main, ["--site", "A", "--config", str(config)], capsys)
    assert code == 2 and "not valid TOML" in output and "Traceback" not in output


# --------------------------------------------------------------------------------------------
# certificates and keys


def expired_ca(tmp: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp / "expired.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def rsa_key(tmp: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp / "rsa.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def pem_key(tmp: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp / "pem.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


KEY_CASES: dict[str, tuple[Callable[[Env, Path], dict], str]] = {
    "CA certificate missing": (
        lambda e, t: {"ca_certificate": str(t / "none.crt")},
        "CA certificate not found",
    ),
    "CA certificate not PEM": (
        lambda e, t: {
            "ca_certificate": str((t / "junk.crt").write_text("hello") and t / "junk.crt")
        },
        "CA certificate is not a PEM X.509 certificate",
    ),
    "CA certificate expired": (
        lambda e, t: {"ca_certificate": str(expired_ca(t))},
        "CA certificate expired on",
    ),
    "server certificate given as CA": (
        lambda e, t: {"ca_certificate": str(e.pki.server_cert)},
        "not a CA certificate",
    ),
    "site key missing": (
        lambda e, t: {"private_key": str(t / "none.key")},
        "site private key not found",
    ),
    "site key in PEM instead of OpenSSH": (
        lambda e, t: {"private_key": str(pem_key(t))},
        "not an OpenSSH private key",
    ),
    "site key is RSA": (lambda e, t: {"private_key": str(rsa_key(t))}, "node keys must be EC keys"),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_bad_certificates_and_keys(
    case: str, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = KEY_CASES[case]
    config = site_config(env, tmp_path, **make(env, tmp_path))
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2 and message in output and "Traceback" not in output, output


def test_site_key_readable_by_others(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = site_config(env, tmp_path)
    (tmp_path / "site.key").chmod(0o644)
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2 and "private key is readable by others (mode 644)" in output


def test_coordinator_with_another_ca_and_unreachable(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = init_pki(tmp_path / "other", ["localhost"], [])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(other.server_cert, other.server_key)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:  # a TLS endpoint whose certificate our CA did not sign
        conn, _ = server.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = site_config(env, tmp_path, port=port)
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    server.close()
    assert code == 2 and "does not verify against" in output and "wrong CA" in output, output
    config = site_config(env, tmp_path, port=port)  # now nothing listens there
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 4 and "unreachable" in output and "giving up" in output


def test_check_gives_up_on_a_coordinator_that_is_down(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without max_retries a running client keeps trying; --check answers within ~10 s."""
    config = site_config(env, tmp_path, max_retries=None)  # nothing listens on port 9
    started = time.monotonic()
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 4 and "still unreachable after 2 retries; giving up" in output, output
    assert output.count("retrying in 5s") == 2
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------------------------
# model files


def test_bad_model_files(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(env.pki.signing_pub)  # type: ignore[attr-defined]
    path = tmp_path / "m.pt"
    verify = fl_server_cli.main
    code, output = run_main(verify, ["verify", str(path), "--key", key], capsys)
    assert code == 2 and "checkpoint file not found" in output
    save_checkpoint(path, {"w": torch.ones(3)}, {"round": 1}, load_signing_key(env.pki.signing_key))  # type: ignore[attr-defined]
    Path(f"{path}.json").unlink()
    code, output = run_main(verify, ["verify", str(path), "--key", key], capsys)
    assert code == 2 and "no checkpoint sidecar" in output
    save_checkpoint(path, {"w": torch.ones(3)}, {"round": 1}, load_signing_key(env.pki.signing_key))  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:100])
    code, output = run_main(verify, ["verify", str(path), "--key", key], capsys)
    assert code == 2 and "digest mismatch" in output
    code, output = run_main(verify, ["verify", str(path), "--key", str(env.pki.ca_cert)], capsys)  # type: ignore[attr-defined]
    assert code == 2 and "not a PEM public key" in output
    assert "Traceback" not in output


# --------------------------------------------------------------------------------------------
# experiment and run configs


EXPERIMENT = """
name = "bad"
[budget]
rounds = 1
[[sites]]
name = "A"
vendor = "A"
format = "camus-nifti"
cases = 4
"""

EXPERIMENT_CASES = {
    "unknown key": (EXPERIMENT + "colour = 1\n", "colour: unknown key (typo?)"),
    "wrong type": (EXPERIMENT.replace("rounds = 1", 'rounds = "ten"'), "budget.rounds"),
    "impossible label-dropout p": (
        EXPERIMENT + '[[conditions]]\nname = "x"\nkind = "local"\nrecipe.label_dropout.p = 1.5\n',
        "condition 'x': recipe.label_dropout.p: Input should be less than or equal to 1",
    ),
    "a key of the earlier layout": (
        EXPERIMENT.replace("rounds = 1", "rounds = 1\nlr = 0.1"),
        "budget.lr is now recipe.optimiser.lr",
    ),
    "synthetic site without cases": (EXPERIMENT.replace("cases = 4", ""), "needs 'cases'"),
    "unknown vendor": (
        EXPERIMENT.replace('vendor = "A"', 'vendor = "Q"'),
        "unknown synthetic vendor 'Q'",
    ),
}


@pytest.mark.parametrize("case", list(EXPERIMENT_CASES))
def test_bad_experiment_config(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = EXPERIMENT_CASES[case]
    path = tmp_path / "exp.toml"
    path.write_text(text)
    os.chdir(tmp_path)
    code, output = run_main(harness.main, ["--config", str(path)], capsys)
    assert code == 2 and message in output and "exp.toml" in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_bad_seeds_and_centralised_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(EXPERIMENT)
    code, output = run_main(harness.main, ["--config", str(path), "--seeds", "0,x"], capsys)
    assert code == 2 and "--seeds must be comma-separated integers" in output
    (tmp_path / "c.toml").write_text(
        f'[[sites]]\nname = "A"\nformat = "camus-nifti"\nroot = "{tmp_path / "nothing"}"\n'
    )
    code, output = run_main(centralised.main, ["--config", str(tmp_path / "c.toml")], capsys)
    assert code == 2 and "does not exist" in output and "Traceback" not in output


def test_run_config_typo_names_the_key() -> None:
    with pytest.raises(ConfigError, match="label-dropout: unknown key"):
        parse_run_settings({"label-dropout": 0.5})
    with pytest.raises(ConfigError, match="label-dropout-p: Input should be less than"):
        parse_run_settings({"label-dropout-p": 2.0})


def test_site_spec_labelled_must_be_known() -> None:
    with pytest.raises(ValueError, match="unknown structure 'RA'"):
        SiteSpec(name="A", format="folder", root=Path("."), labelled=["RA"])


def test_a_view_that_is_a_path_is_refused(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``views`` names CAMUS views; a path there (``../../../etc/passwd``) is a clear error."""
    config = site_config(env, tmp_path)
    config.write_text(config.read_text() + '[loader_options]\nviews = ["../../../etc/passwd"]\n')
    code, output = run_main(
        fl_client_cli.main, ["--site", "A", "--config", str(config), "--check"], capsys
    )
    assert code == 2, output
    assert "../../../etc/passwd" in output and "Traceback" not in output
    print(output)
