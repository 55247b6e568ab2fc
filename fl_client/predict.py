"""``fl-client predict``: segment and measure a hospital's recordings with the final model the
coordinator sent this site, offline.

    fl-client predict --site A --input /data/new-studies --format dicom --out predictions/

The model is the newest final model the site keeps (``--run NAME`` for an older one; see
:mod:`fl_client.models`), verified again against the site's ``model_verify_key`` before use.
Nothing is contacted. Inputs, outputs and measurements are those of ``echofl-predict``
(:mod:`common.predict`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import ConfigError, EchoflError
from common.names import run_name_arg, site_name_arg
from common.predict import add_input_arguments, predict_with
from common.version import add_version
from fl_client.models import stored_model, stored_runs
from fl_client.site_config import load_site_config, site_config_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fl-client predict", description=(__doc__ or "").splitlines()[0]
    )
    add_version(parser)
    parser.add_argument("--site", required=True, type=site_name_arg)
    parser.add_argument("--config", type=Path, help="the site's config file")
    parser.add_argument("--config-dir", type=Path, help="folder of <site>.toml files")
    parser.add_argument("--run", type=run_name_arg, help="the run whose final model to use")
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    path = site_config_path(args.site, args.config, args.config_dir)
    try:
        config = load_site_config(args.site, path)
        if config.model_verify_key is None:
            raise ConfigError(
                path,
                "model_verify_key is not set: fl-client predict uses only final models verified "
                "against the coordinator's model-signing.pub",
            )
        checkpoint = stored_model(config.models_dir, args.run)
    except EchoflError as exc:
        print(f"[fl-client {args.site}] error: {exc}", file=sys.stderr)
        return 2
    others = [r for r in stored_runs(config.models_dir) if r != checkpoint.parent.name]
    if others:
        print(f"other stored models (--run): {', '.join(others)}", file=sys.stderr)
    return predict_with(args, checkpoint, config.model_verify_key, allow_unsigned=False)
