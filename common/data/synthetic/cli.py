"""``echofl-synth``: generate a synthetic federation from a TOML config.

    echofl-synth --config simulations/configs/federations/fedecho.toml [--force]

Writes every site in its native format under ``output_dir`` (one folder per site) and prints
what it made; sites whose settings did not change are reused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import load_config
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.errors import EchoflError
from common.version import add_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="echofl-synth", description="Generate a synthetic multi-vendor echo federation."
    )
    add_version(parser)
    parser.add_argument("--config", type=Path, required=True, help="federation TOML file")
    parser.add_argument("--output-dir", type=Path, help="override output_dir of the config")
    parser.add_argument("--force", action="store_true", help="regenerate up-to-date sites too")
    args = parser.parse_args(argv)
    try:
        config = load_config(FederationConfig, args.config)
        if args.output_dir is not None:
            config = config.model_copy(update={"output_dir": args.output_dir})
        sites = generate_federation(config, force=args.force)
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(sites)} site(s) in {config.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
